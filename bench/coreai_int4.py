"""Benchmark: Core AI int4 on SmolLM2-135M — onto which grid GPTQ rounds, judged at the torch level.

A Core AI program's int4 is coreai-opt's data-free pass (quantize_weights(INT4, SYMMETRIC,
PER_BLOCK), backends/coreai/compress.py), which re-derives each block's scale from the weights it
is given and rounds them again onto its grid. This applies that pass to the calibrated torch
weights with coreai-opt's own function (_compute_qparams_by_dtype: the levels and scales it would
write), the tied embedding/head per block of 8 as the compressor takes it, and judges the model on
the evaluation passage as the LLM bundle's validation does (its first 128 tokens, quality.token_metrics
against the float32 model). Variants:

- `data-free`: coreai-opt's pass alone;
- `coremltools-grid`: GPTQ onto coremltools' grid, then the pass (Core AI int4 before);
- `coremltools-grid-as-is`: the same GPTQ weights, no pass on the layers (what the Core ML package
  holds; what writing GPTQ's own grid into the program would give);
- `coreai-opt-grid`: GPTQ onto coreai-opt's grid (lut_gptq.COREAI_OPT_GRID), then the pass;
- `coreai-opt-grid-free`: the same grid without keeping each block's largest weight at ±7.

Also printed: the share of layer weights the pass moves (by more than 1e-5).

    OMP_NUM_THREADS=2 python bench/coreai_int4.py [--variants a,b] [--block-size 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # bench/queue.py must not shadow the standard library's queue

VARIANTS = ("data-free", "coremltools-grid", "coremltools-grid-as-is", "coreai-opt-grid", "coreai-opt-grid-free")


def coreai_opt_int4(weight, block: int):
    """The weight as coreai-opt's int4 pass leaves it (float32, per block of `block` inputs)."""
    import numpy as np
    import torch
    from coreai_opt.coreai_utils._coreai_imports import compression_types
    from coreai_opt.coreai_utils._utils.quantize_utils import _compute_qparams_by_dtype
    from coreai_opt.coreai_utils.common import QScheme

    data, scale, _ = _compute_qparams_by_dtype(weight.detach().numpy(), compression_types.string_to_builtin("int4"),
                                               QScheme.SYMMETRIC, [1, block])
    dense = data.astype(np.float32).reshape(len(weight), -1, block) * scale[:, :, None]
    return torch.from_numpy(dense.reshape(weight.shape))


def run(variant: str, model_path: Path, block: int) -> dict:
    import torch

    from converters.capture import load
    from converters.options import ConversionOptions
    from converters.plan import make_plan
    from converters.source import open_source
    from converters.source_tokenizer import load_tokenizer
    from converters.transforms import calibrate as calibration, lut_gptq
    from converters.transforms.schemes import EMBEDDING_BLOCK, WEIGHT_THRESHOLD
    from converters.validation import quality

    strings = {"quantize": "int4", "sequence_length": "128", "block_size": str(block)}
    if variant.startswith("coremltools"):
        strings.update(format="both", minimum_deployment_target="iOS18")  # a Core ML package too: coremltools' grid
    else:
        strings.update(format="coreai")
    plan = make_plan(open_source(str(model_path)), "text-generation", ConversionOptions.from_strings(**strings))
    tokenizer = load_tokenizer(model_path, plan.cfg.attributes.vocab_size)
    ids = [int(i) for i in tokenizer(quality.passage(), add_special_tokens=True)["input_ids"]][:128]
    reference_model = load(plan).eval()
    with torch.no_grad():
        reference = reference_model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float().numpy()
    del reference_model

    model = load(plan).eval()
    started = time.perf_counter()
    if variant != "data-free":
        if variant == "coreai-opt-grid-free":
            original = lut_gptq._Blocks._coreai_opt_blocks

            def free(self, values, first, last):
                original(self, values, first, last)
                self.extreme[first:last] = -1  # no column matches: every weight rounds to its nearest level

            lut_gptq._Blocks._coreai_opt_blocks = free
        assert calibration.algorithm(plan.options)["grid"] == (
            lut_gptq.COREMLTOOLS_GRID if variant.startswith("coremltools") else lut_gptq.COREAI_OPT_GRID)
        calibration.calibrate(plan, model, tokenizer)
    seconds = time.perf_counter() - started
    moved = total = 0
    with torch.no_grad():
        embedding = model.get_input_embeddings().weight
        embedding.data = coreai_opt_int4(embedding.data, EMBEDDING_BLOCK)  # tied: the head too
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and module.weight is not embedding and module.weight.numel() > WEIGHT_THRESHOLD:
                after = coreai_opt_int4(module.weight.data, block)
                moved += int(((after - module.weight.data).abs() > 1e-5).sum())
                total += module.weight.numel()
                if variant != "coremltools-grid-as-is":
                    module.weight.data = after
        actual = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float().numpy()
    import numpy as np

    metrics = quality.token_metrics(reference, actual, np.asarray(ids))
    return {**metrics, "moved_by_the_pass": moved / total, "calibration_seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from tests.real_models import smollm2_135m

    model_path = args.model or smollm2_135m()
    results = {}
    for variant in args.variants.split(","):
        results[variant] = run(variant, model_path, args.block_size)
        r = results[variant]
        print(f"{variant:24s} perplexity x{r['perplexity_ratio']:.4f}  KL {r['mean_kl_divergence']:.4f}  "
              f"top-1 {r['top1_agreement']:.3f}  moved {r['moved_by_the_pass']:.3f}  GPTQ {r['calibration_seconds']} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
