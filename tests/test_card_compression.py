"""The model card of a compressed package (worker/card.py): its Compression section (scheme,
method, granularity, bits per weight, size before and after, weights compressed and left
float, and the quality numbers on real text next to the scheme's bar and its reason), the
Program section when the engine reports one, and in "Where the model can run" the compute
unit each scheme suits, per coremltools' guide. The report is a real tiny conversion's."""

from __future__ import annotations

import copy
import json

import pytest

from converters import wording
from converters.backends.coreml.compress import SCHEMES
from converters.wording import megabytes
from worker import card


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    """A tiny llama (hidden 64: its MLP layers pass coremltools' 2048-element threshold)
    converted with int8 and validated, once: the report as the worker stores it (JSON)."""
    from converters.export import convert
    from converters.options import ConversionOptions
    from tests.models import build_model

    root = tmp_path_factory.mktemp("card-int8")
    folder = build_model("llama", root / "llama", hidden_size=64, intermediate_size=128)
    options = ConversionOptions.from_strings(quantize="int8", sequence_length="32", minimum_deployment_target="iOS18")
    return json.loads(json.dumps(convert(str(folder), "text-generation", root / "out", options).report_json))


def body(report: dict) -> str:
    return card.card_body(source_repo="alice/tiny-llama", revision="0123456789abcdef", source_url="http://hub/alice/tiny-llama",
                          report=report, package_paths=["tiny-llama.mlpackage"])


def section(text: str, title: str) -> str:
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def uncompressed(report: dict) -> dict:
    packages = [{k: v for k, v in p.items() if k != "compression"} for p in report["packages"]]
    validation = {k: v for k, v in report["validation"].items() if k != "quality"}
    return {**report, "packages": packages, "validation": validation}


def test_the_card_has_a_compression_section_with_sizes_and_quality_against_its_bar(compressed):
    text = body(compressed)
    assert text.index("\n## Compression\n") < text.index("\n## Validation\n")
    compression = section(text, "Compression")
    entry = compressed["packages"][0]["compression"]
    size = f"{megabytes(entry['size_before_bytes'])} → {megabytes(entry['size_after_bytes'])} ({entry['size_ratio']:.2f}×)"
    assert (f"| model | `int8` | linear symmetric quantization | per channel | {card.number(entry['bits_per_weight'])} | "
            f"{size} | {entry['weights_compressed']} compressed (") in compression
    assert "of all weight values), 0 left float |" in compression
    quality = compressed["validation"]["quality"]
    for mode in ("fp32", "fp16"):
        numbers = quality["packages"]["model"][mode]
        assert (f"| model | {mode} | {card.number(numbers['top1_agreement'], 'top1_agreement')} (bar ≥ 90.0%) | "
                f"{card.number(numbers['mean_kl_divergence'])} (bar ≤ 0.04879) | "
                f"{card.number(numbers['perplexity_ratio'])} (bar ≤ 1.05) | "
                f"PyTorch {numbers['perplexity_pytorch']:,.2f} → package {numbers['perplexity_package']:,.2f} | pass |"
                ) in compression
    assert f"The bar: {card._plain(quality['bar']['reason'])}." in compression


def test_a_quality_number_past_its_bar_fails_its_row(compressed):
    report = copy.deepcopy(compressed)
    report["validation"]["quality"]["packages"]["model"]["fp16"]["top1_agreement"] = 0.5
    rows = [line for line in section(body(report), "Compression").splitlines() if line.startswith("| model | fp")]
    assert rows[0].endswith("| pass |") and rows[1].endswith("| FAIL |") and "50.0% (bar ≥ 90.0%)" in rows[1]
    report["validation"]["quality"]["bar"] = None  # a scheme without a bar: nothing to judge against
    assert all(line.endswith("| not judged |") for line in section(body(report), "Compression").splitlines()
               if line.startswith("| model | fp"))


def test_where_the_model_can_run_names_the_unit_the_scheme_suits(compressed):
    where = section(body(compressed), "Where the model can run")
    units = compressed["validation"]["compute_units"]["model"]["units"]
    words = [card.UNIT_WORDS[units[key]] for key in ("cpu", "gpu", "neural_engine")]
    assert "| model | " + " | ".join(words) + " |" in where
    assert f"- {wording.PLACEMENT_NOTES['int8']}" in where and f"- {wording.DECOMPRESSION_NOTE}" in where
    float_where = section(body(uncompressed(compressed)), "Where the model can run")
    assert "| model |" in float_where and "coremltools" not in float_where


def test_every_scheme_has_a_placement_note_from_the_guide():
    for scheme in SCHEMES:
        assert wording.placement_note(scheme), scheme
    assert wording.placement_note("none") is None and wording.placement_note(None) is None
    assert wording.placement_note("lut4") == wording.placement_note("lut6") == wording.placement_note("lut8")
    assert "GPU" in wording.placement_note("int4") and "GPU" in wording.placement_note("mixed")
    assert "Neural Engine" in wording.placement_note("int8") and "Neural Engine" in wording.placement_note("lut6")


def test_an_uncompressed_card_has_no_compression_section(compressed):
    text = body(uncompressed(compressed))
    assert "\n## Compression\n" not in text and "\n## Program\n" in text and "\n## Validation\n" in text
    without_program = uncompressed(compressed)
    without_program["packages"] = [{k: v for k, v in p.items() if k != "program"} for p in without_program["packages"]]
    assert "\n## Program\n" not in body(without_program)  # an older report: the section is skipped


def test_the_program_section_when_the_engine_reports_it(compressed):
    program = {"fused_attention": False, "stateful": True, "weight_bits": 8.6,
               "op_counts": {"linear": 15, "mul": 27, "read_state": 2, "constexpr_blockwise_shift_scale": 8}}
    for report in (compressed, uncompressed(compressed)):
        text = body({**report, "packages": [{**report["packages"][0], "program": program}]})
        assert ("| model | no | yes | 8.6 | mul 27, linear 15, constexpr\\_blockwise\\_shift\\_scale 8, read\\_state 2 |"
                in section(text, "Program"))


def test_a_core_ai_packages_program_says_only_what_an_aimodel_has(compressed):
    """The pushed card's Program table in each format's words, as the page says them: an .aimodel
    has no Core ML fused attention op or weight bits (formats.Format.program_facts), so its row
    does not say "fused attention: no" and an empty "weight bits"; beside a Core ML package each
    row names its package's format."""
    from converters.formats import CORE_AI, CORE_ML

    core_ml = {"fused_attention": True, "stateful": False, "weight_bits": 8.6, "op_counts": {"linear": 15}}
    aimodel = {"fused_attention": False, "stateful": True, "weight_bits": None, "op_counts": {"matmul": 3}}
    package = {**compressed["packages"][0], "part": "model"}
    alone = section(body({**compressed, "packages": [{**package, "format": CORE_AI.name, "program": aimodel}]}), "Program")
    assert "fused attention" not in alone and "weight bits" not in alone
    assert "| package | stateful | most frequent ops |" in alone and "| model | yes | matmul 3 |" in alone
    both = section(body({**compressed, "packages": [{**package, "format": CORE_ML.name, "program": core_ml},
                                                    {**package, "format": CORE_AI.name, "program": aimodel}]}), "Program")
    assert "| package | fused attention | stateful | weight bits | most frequent ops |" in both
    assert "| model (Core ML) | yes | no | 8.6 | linear 15 |" in both and "| model (Core AI) | — | yes | — | matmul 3 |" in both


def test_a_core_ai_cards_options_say_the_deployment_target_was_not_used(compressed):
    """The deployment target is a Core ML package's alone: a Core AI card's Options used table
    said "minimum deployment target `iOS17`" of an .aimodel, which runs on Apple's 27 releases."""
    from converters.formats import BOTH, CORE_AI

    def options_used(format_name):
        report = {**compressed, "options": {**compressed["options"], "format": format_name}}
        return section(body(report), "Options used")

    assert ("| minimum deployment target | not used: the .aimodel runs on iOS 27 and macOS 27 (Core AI is in beta) |"
            in options_used(CORE_AI.name))
    target = compressed["options"]["minimum_deployment_target"]
    assert f"| minimum deployment target | `{target}` |" in options_used(BOTH.name)  # the .mlpackage's
    assert f"| minimum deployment target | `{target}` |" in section(body(compressed), "Options used")


def test_the_cards_title_names_the_formats_the_repo_holds(compressed):
    """Issue 24: a Core AI push titled its card "Core ML conversion of …". The title names the
    format of the packages the repo holds — this push's and those earlier ones left beside them."""
    def title(paths, others=None):
        readme = card.model_card(source_repo="alice/tiny-llama", revision="0123456789abcdef", source_url="http://hub/a",
                                 report=compressed, package_paths=paths, other_packages=others)
        return next(line for line in readme.splitlines() if line.startswith("# "))

    assert title(["tiny-llama/tiny-llama.aimodel"]) == "# Core AI conversion of alice/tiny-llama"
    assert title(["tiny-llama.mlpackage"]) == "# Core ML conversion of alice/tiny-llama"
    both = "# Core ML and Core AI packages of alice/tiny-llama"
    assert title(["tiny-llama.mlpackage", "tiny-llama/tiny-llama.aimodel"]) == both
    assert title(["tiny-llama/tiny-llama.aimodel"], ["tiny-llama-old.mlpackage"]) == both  # an earlier push's, kept
    assert card.conversion_title("text-generation", compressed["options"]).startswith("Add Core ML conversion (")


def test_report_text_cannot_break_the_tables(compressed):
    report = copy.deepcopy(compressed)
    report["packages"][0]["compression"]["method"] = "a | b <script>"
    compression = section(body(report), "Compression")
    assert "a \\| b &lt;script&gt;" in compression and "<script>" not in compression
