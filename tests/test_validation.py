"""Validation catches what it must: altered weights, a swapped op, an fp16 overflow and an
op the executor lacks all fail with their numbers; honest packages pass in both modes."""

from __future__ import annotations

import json
import platform
import struct
from pathlib import Path

import numpy as np
import pytest

from converters.__main__ import main as convert_main
from converters.export import convert
from converters.options import ConversionOptions
from converters.validate_package import main as validate_main
from converters.backends.coreml import executor as executor_module
from tests.models import build_model

OPTIONS = ConversionOptions.from_strings(sequence_length=12)
WEIGHTS = Path("Data/com.apple.CoreML/weights/weight.bin")
_FP16 = 1  # MIL blob dtype code for float16 in weight.bin


@pytest.fixture(scope="module")
def llama_package(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("llama")
    result = convert(str(tiny_model("llama")), "text-generation", out, OPTIONS)
    assert result.report_json["validation"]["passed"], result.report_json["validation"]["message"]
    return result.packages[0]


def _copy(package: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / package.name
    shutil.copytree(package, target)
    return target


def _blobs(data: bytes):
    """(dtype, size, offset) of each weight blob: weight.bin is a 64-byte header, then
    per blob a 64-byte metadata record (sentinel 0xDEADBEEF, dtype, size, offset)."""
    for start in range(64, len(data) - 24, 64):
        sentinel, dtype, size, offset = struct.unpack_from("<IIQQ", data, start)
        if sentinel == 0xDEADBEEF:
            yield dtype, size, offset


def _validate(package: Path, source: Path, task: str, tmp_path: Path) -> dict:
    report = tmp_path / "validation.json"
    code = validate_main([str(package), "--source", str(source), "--task", task, "--report", str(report)])
    data = json.loads(report.read_text())
    assert code == (0 if data["validation"]["passed"] else 1)
    return data["validation"]


def test_honest_package_passes_with_numbers(llama_package, tiny_model, tmp_path):
    validation = _validate(llama_package, tiny_model("llama"), "text-generation", tmp_path)
    assert validation["passed"] is True
    rows = validation["checks"]
    assert {r["mode"] for r in rows} == {"fp32", "fp16"}
    assert {r["metric"] for r in rows} >= {"max_abs_diff", "psnr_db", "top1_agreement", "finite_share"}
    assert all(isinstance(r["value"], float) for r in rows)
    assert "reference executor" in validation["kind"]


def test_altered_weights_fail(llama_package, tiny_model, tmp_path):
    package = _copy(llama_package, tmp_path)
    weights = package / WEIGHTS
    data = bytearray(weights.read_bytes())
    dtype, size, offset = max((b for b in _blobs(data) if b[0] == _FP16), key=lambda b: b[1])
    values = np.frombuffer(bytes(data[offset:offset + size]), dtype=np.float16).copy()
    values[::3] *= -4  # a third of the largest weight tensor altered
    data[offset:offset + size] = values.tobytes()
    weights.write_bytes(bytes(data))
    validation = _validate(package, tiny_model("llama"), "text-generation", tmp_path)
    assert validation["passed"] is False
    failed = [r for r in validation["checks"] if not r["passed"]]
    assert {r["mode"] for r in failed} == {"fp32", "fp16"}
    assert any(r["metric"] == "psnr_db" for r in failed)
    assert "checks failed" in validation["message"]


def test_swapped_op_fails(llama_package, tiny_model, tmp_path):
    import coremltools as ct

    spec = ct.utils.load_spec(str(llama_package))
    block = spec.mlProgram.functions["main"].block_specializations["CoreML7"]
    swapped = 0
    for operation in block.operations:
        if operation.type == "add" and swapped < 2:  # residual connections become differences
            operation.type = "sub"
            swapped += 1
    assert swapped == 2
    package = tmp_path / "swapped.mlpackage"
    ct.models.MLModel(spec, weights_dir=str(llama_package / "Data/com.apple.CoreML/weights"), skip_model_load=True).save(str(package))
    validation = _validate(package, tiny_model("llama"), "text-generation", tmp_path)
    assert validation["passed"] is False
    assert any(r["metric"] == "max_abs_diff" and not r["passed"] for r in validation["checks"])


def _loud_llama(tmp_path, embedding_scale: float, final_norm_scale: float = 1.0):
    from safetensors.torch import load_file, save_file

    folder = build_model("llama", tmp_path / "loud-llama")
    weights = load_file(folder / "model.safetensors")
    weights["model.embed_tokens.weight"] = weights["model.embed_tokens.weight"] * embedding_scale
    weights["model.norm.weight"] = weights["model.norm.weight"] * final_norm_scale
    if final_norm_scale != 1.0 and "lm_head.weight" in weights:  # untied head: ~0.02 -> ~20
        weights["lm_head.weight"] = weights["lm_head.weight"] * 1000
    save_file({k: v.contiguous() for k, v in weights.items()}, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_massive_activations_are_held_by_the_float16_safe_norm(tmp_path):
    """|x| ~ 400 in the residual stream (real LLMs reach 1e4): RMSNorm's x*x overflows
    float16, but the package normalises x / max|x| and stays right in fp16 emulation."""
    report_path = tmp_path / "report.json"
    folder = _loud_llama(tmp_path, embedding_scale=20000)
    code = convert_main([str(folder), "--sequence-length", "12", "--output", str(tmp_path / "out"), "--report", str(report_path)])
    report = json.loads(report_path.read_text())
    assert code == 0, report["validation"]["message"]
    fp16 = [r for r in report["validation"]["checks"] if r["mode"] == "fp16" and r["metric"] == "psnr_db"]
    assert fp16 and all(r["passed"] for r in fp16)
    assert report["packages"][0]["float16_safe_norms"] == 2 * 2 + 1  # two per layer, and the final norm


def test_fp16_overflow_is_caught_by_device_emulation(tmp_path, capsys):
    """Values that are themselves above float16's 65504 (logits ~1e5 here) overflow on the
    GPU/Neural Engine whatever the formulation, and not in fp32: validation must fail."""
    folder = _loud_llama(tmp_path, embedding_scale=20000, final_norm_scale=1000)
    report_path = tmp_path / "report.json"
    code = convert_main([str(folder), "--sequence-length", "12", "--output", str(tmp_path / "out"), "--report", str(report_path)])
    assert code == 1
    assert "validation failed" in capsys.readouterr().err
    checks = json.loads(report_path.read_text())["validation"]["checks"]
    assert all(r["passed"] for r in checks if r["mode"] == "fp32")
    failed = [r for r in checks if not r["passed"]]
    assert failed and {r["mode"] for r in failed} == {"fp16"}
    assert any(r["metric"] == "finite_share" for r in failed)


def test_fully_masked_rows_stay_finite_in_float16(tmp_path):
    """finfo(float32).min is -inf in float16: a fully masked softmax row would be NaN on
    device. The float16 masked_fill patch keeps it finite, and fp16 emulation shows it."""
    import coremltools as ct
    import torch

    from converters.backends.coreml.patches import op_patches
    from converters.backends.coreml.executor import ReferenceExecutor

    class Masked(torch.nn.Module):
        def forward(self, scores, keep):
            return torch.softmax(scores.masked_fill(keep == 0, torch.finfo(torch.float32).min), dim=-1)

    scores, keep = torch.randn(1, 4, 4), torch.tensor([[[1, 1, 0, 0]] * 3 + [[0, 0, 0, 0]]], dtype=torch.int32)
    program = torch.export.export(Masked(), (scores, keep)).run_decompositions({})
    inputs = {"scores": scores.numpy(), "keep": keep.numpy()}
    results = {}
    for patched in (False, True):
        with op_patches(float16=patched):
            model = ct.convert(program, inputs=[ct.TensorType(name="scores", shape=(1, 4, 4)), ct.TensorType(name="keep", shape=(1, 4, 4), dtype=np.int32)],
                               minimum_deployment_target=ct.target.iOS17, skip_model_load=True)
        path = tmp_path / f"masked-{patched}.mlpackage"
        model.save(str(path))
        results[patched] = next(iter(ReferenceExecutor(path).predict(inputs, mode="fp16").values()))
    assert np.isnan(results[False][0, 3]).all()  # the hazard is real
    assert np.isfinite(results[True]).all()
    np.testing.assert_allclose(results[True][0], Masked()(scores, keep)[0].numpy(), atol=2e-3)


def test_an_op_the_executor_lacks_fails_by_name(llama_package, tiny_model, tmp_path, monkeypatch):
    monkeypatch.delitem(executor_module.KERNELS, "softmax")
    validation = _validate(llama_package, tiny_model("llama"), "text-generation", tmp_path)
    assert validation["passed"] is False
    assert "softmax" in validation["message"]
    assert validation["checks"][0]["metric"] == "executor_supports_all_ops"


def test_no_validate_is_said_plainly(tiny_model, tmp_path, capsys):
    report = tmp_path / "r.json"
    code = convert_main([str(tiny_model("bert")), "--no-validate", "--sequence-length", "8", "--output", str(tmp_path / "o"), "--report", str(report)])
    assert code == 0
    data = json.loads(report.read_text())
    assert data["validation"] == {"passed": None, "skipped": True, "message": "validation was skipped (--no-validate)", "checks": []}
    assert any("Validation was skipped" in w for w in data["warnings"])
    assert "validation: skipped" in capsys.readouterr().out


def test_compute_units_from_the_program(tiny_model, tmp_path):
    ranged = convert(str(tiny_model("bert")), "feature-extraction", tmp_path / "r", ConversionOptions.from_strings(sequence_length="4-16"))
    analysis = ranged.report_json["validation"]["compute_units"]["model"]
    # Apple: range shapes run on the GPU or CPU, and on the Neural Engine at the default shape only.
    assert analysis["units"] == {"cpu": "yes", "gpu": "yes", "neural_engine": "default_shape"}
    assert any("range shapes run on the GPU or CPU" in reason and "input_ids [1, " in reason
               for reason in analysis["reasons"])
    assert any("GPU or CPU, and on the Neural Engine only at the default length" in w for w in ranged.report_json["warnings"])
    assert ranged.report_json["validation"]["passed"], ranged.report_json["validation"]["message"]
    assert {r["inputs"] for r in ranged.report_json["validation"]["checks"]} == {"text, 4 tokens", "text, 16 tokens"}

    fp32 = convert(str(tiny_model("vit")), "image-classification", tmp_path / "f", ConversionOptions.from_strings(precision="float32"))
    units = fp32.report_json["validation"]["compute_units"]["model"]
    assert units["units"]["neural_engine"] == "no"
    # No float16 emulation rows for a float32 package: no device runs it in float16.
    assert {row["mode"] for row in fp32.report_json["validation"]["checks"]} == {"fp32"}
    assert any("float32" in reason for reason in units["reasons"])


def test_enumerated_lengths_are_each_validated(tiny_model, tmp_path):
    result = convert(str(tiny_model("gpt2")), "text-generation", tmp_path,
                     ConversionOptions.from_strings(sequence_length="8,16", minimum_deployment_target="iOS18"))
    validation = result.report_json["validation"]
    assert validation["passed"], validation["message"]
    assert {r["inputs"] for r in validation["checks"] if r["metric"] != "continuation_match"} == {"text, 8 tokens", "text, 16 tokens"}
    assert validation["compute_units"]["model"]["units"]["gpu"] == "yes"


@pytest.mark.macos
@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML predict and MLComputePlan exist only on macOS")
def test_real_compute_units_on_macos(llama_package, tiny_model, tmp_path):
    validation = _validate(llama_package, tiny_model("llama"), "text-generation", tmp_path)
    assert validation["passed"], validation["message"]
    modes = {r["mode"] for r in validation["checks"]}
    assert modes >= {"fp32", "fp16", "coreml-CPU_ONLY", "coreml-CPU_AND_GPU", "coreml-CPU_AND_NE", "coreml-ALL"}
    assert "Core ML on this Mac" in validation["kind"]
    plan = validation["placement"]["model"]["CPU_ONLY"]
    if plan.get("available"):
        assert plan["ops"] > 0 and set(plan["by_device"]) <= {"cpu", "gpu", "neural_engine", "other"}


def test_tolerance_option_scales_the_thresholds(llama_package, tiny_model, tmp_path):
    from converters.configs import config_class_for
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model("llama"))
    strict = config_class_for("llama")(config, "text-generation", ConversionOptions.from_strings(tolerance="strict"))
    loose = config_class_for("llama")(config, "text-generation", ConversionOptions.from_strings(tolerance="loose"))
    base = strict.tolerances
    assert strict.validation_tolerances().atol["float16"] == pytest.approx(base.atol["float16"] / 4)
    assert loose.validation_tolerances().atol["float16"] == pytest.approx(base.atol["float16"] * 4)
    assert loose.validation_tolerances().min_psnr["float16"] == pytest.approx(base.min_psnr["float16"] - 12.04, abs=0.01)
    assert loose.validation_tolerances().min_top1 == base.min_top1

    # The thresholds in the report follow the option, row by row.
    thresholds = {}
    for tolerance in ("default", "strict"):
        options = ConversionOptions.from_strings(sequence_length=12, tolerance=tolerance)
        report = convert(str(tiny_model("llama")), "text-generation", tmp_path / tolerance, options).report_json
        assert report["options"]["tolerance"] == tolerance
        thresholds[tolerance] = [r["threshold"] for r in report["validation"]["checks"] if r["metric"] == "max_abs_diff"]
    assert thresholds["strict"] == pytest.approx([t / 4 for t in thresholds["default"]], rel=1e-3)


def test_unknown_tolerance_is_refused(tiny_model, tmp_path, capsys):
    code = convert_main([str(tiny_model("bert")), "--tolerance", "lenient", "--output", str(tmp_path / "o")])
    assert code == 2
    assert "Unknown tolerance 'lenient'. Choose one of: strict, default, loose" in capsys.readouterr().err
