"""Calibrated palettes on the real LLM (GPTQ onto k-means tables, converters/transforms/lut_gptq.py),
through the whole pipeline. Apart from tests/test_compression.py so that the two run on different
xdist workers (a file stays on one): lut4's stateful validation alone takes minutes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from converters.export import convert
from converters.options import ConversionOptions
from converters.package_info import directory_size
from tests.test_compression import SIZE_BARS, constexpr_ops

# Calibrated palettes on the real LLM (GPTQ onto k-means tables, lut_gptq.py). Data-free, the
# same model's lut4 was destroyed (13.6x perplexity) and its lut6 missed its KL bar (0.17).
# Held near the README's figures (lut4 1.18x, lut6 1.03x), not only the scheme's bar: measured on
# 5 December 2026, lut4 1.179x (fp32) / 1.177x (fp16), KL 0.152, top-1 76.9 %; lut6 1.028x.
PALETTE_QUALITY = {
    "lut4": {"perplexity_ratio": 1.22, "mean_kl_divergence": 0.18, "top1_agreement": 0.72},
    "lut6": {"perplexity_ratio": 1.05, "mean_kl_divergence": 0.06, "top1_agreement": 0.85},
}


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["lut4", "lut6"])
def test_real_llm_calibrated_palettes_through_the_pipeline_meet_their_bars(scheme, real_llm, real_float16, tmp_path):
    """lut4 as Apple's fast LLM program: stateful, fused attention, 4-bit weights, driven as
    swift-transformers drives it; lut6 with fixed shapes."""
    stateful = scheme == "lut4"
    result = convert(str(real_llm), "text-generation", tmp_path,
                     ConversionOptions.from_strings(quantize=scheme, minimum_deployment_target="iOS18", sequence_length="128",
                                                    kv_cache="stateful" if stateful else "none"))
    (entry,) = result.report_json["packages"]
    assert entry["program"]["stateful"] is stateful and entry["program"]["fused_attention"]
    if stateful:
        runs = result.report_json["validation"]["continuation"]["runs"]
        assert {run["mode"] for run in runs} == {"fp32", "fp16"}
        assert all(run["passed"] and "stateful" in run["driven_as"] for run in runs), runs
    compression = entry["compression"]
    assert compression["calibration"]["weights"] == 30 * 7 and "k-means tables" in compression["method"]
    assert compression["float_weights_left"] == 0
    ops = constexpr_ops(Path(entry["path"]))
    assert "constexpr_lut_to_dense" in ops
    if scheme == "lut4":  # a table per channel; the tied embedding/head int8
        assert compression["granularity"] == "per channel; embeddings and output head int8 per channel"
        assert ops == {"constexpr_lut_to_dense", "constexpr_blockwise_shift_scale"}
    else:
        assert compression["granularity"] == "per grouped channel (group 16)" and ops == {"constexpr_lut_to_dense"}
    ratio = entry["size_bytes"] / directory_size(real_float16)
    assert ratio <= SIZE_BARS[scheme] and compression["size_ratio"] == pytest.approx(ratio, rel=0.01)
    validation = result.report_json["validation"]
    assert validation["passed"], validation["message"]
    for mode, numbers in validation["quality"]["packages"]["model"].items():
        for name, bound in PALETTE_QUALITY[scheme].items():
            good = numbers[name] >= bound if name == "top1_agreement" else numbers[name] <= bound
            assert good, (mode, name, numbers)
