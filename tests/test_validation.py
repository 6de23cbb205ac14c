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


# ---------------------------------------------------------------------- rows that can fail, per output kind
# A tiny random head near-ties its labels (vocab 128: softmax rows ~0.008, under float16's 0.05
# tolerance), so a label or top-1 row on it can hardly fail. Each kind here has a case whose row
# can fail (a head with clear margins, or a metric with no near-tie allowance), and the package's
# own outputs, tampered after it ran, fail that row. The tamper is the only change: the honest
# package passes first. Detection, depth and image-text: tests/test_vision_kinds.py.


def _tamper(monkeypatch, output: str, change) -> None:
    """Every prediction of the reference executor (both modes) returns `output` changed by `change`."""
    real = executor_module.ReferenceExecutor.predict

    def predict(self, *args, **kwargs):
        outputs = real(self, *args, **kwargs)
        return {**outputs, output: change(outputs[output])} if output in outputs else outputs

    monkeypatch.setattr(executor_module.ReferenceExecutor, "predict", predict)


def _rows(validation: dict, output: str, metric: str) -> list[dict]:
    rows = [r for r in validation["checks"] if r["output"] == output and r["metric"] == metric]
    assert rows, (output, metric, {(r["output"], r["metric"]) for r in validation["checks"]})
    return rows


def _fails_in_both_modes(validation: dict, output: str, metric: str) -> None:
    assert validation["passed"] is False
    rows = _rows(validation, output, metric)
    assert {r["mode"] for r in rows if not r["passed"]} == {"fp32", "fp16"}, rows


def test_a_decided_classifier_fails_its_label_row_when_the_label_is_tampered(tmp_path, monkeypatch):
    """A BERT classifier whose head is scaled x100 decides its labels (PyTorch's top label ahead
    by far more than the tolerance): the package naming another label fails the label row, in
    both modes, while its probabilities, untouched, still pass."""
    from tests.test_compressed_validation import _tiny_classifier

    source = _tiny_classifier(tmp_path / "classifier")
    package = convert(str(source), "text-classification", tmp_path / "out", OPTIONS, validate=False).packages[0]
    honest = _validate(package, source, "text-classification", tmp_path)
    assert honest["passed"] is True and all(r["passed"] for r in _rows(honest, "classLabel", "label_agreement"))
    labels = ["negative", "neutral", "positive"]
    _tamper(monkeypatch, "classLabel", lambda label: labels[(labels.index(str(label)) + 1) % 3])
    tampered = _validate(package, source, "text-classification", tmp_path)
    _fails_in_both_modes(tampered, "classLabel", "label_agreement")
    assert all(r["passed"] for r in _rows(tampered, "probabilities", "max_abs_diff"))


def _decided_llama(folder: Path) -> Path:
    """A tiny llama whose final norm keeps one direction of the hidden state and whose head reads
    it as +10 for one token and -10 for another: each position's top token leads the rest by its
    whole logit (a decided next token), not by a near-tie."""
    from safetensors.torch import load_file, save_file

    folder = build_model("llama", folder)
    weights = load_file(folder / "model.safetensors")
    norm = weights["model.norm.weight"]
    weights["model.norm.weight"] = norm.clone() * 0
    weights["model.norm.weight"][0] = 1.0
    head = "lm_head.weight" if "lm_head.weight" in weights else "model.embed_tokens.weight"
    column = weights[head][:, 0].clone() * 0
    column[7], column[9] = 10.0, -10.0
    weights[head] = weights[head].clone()
    weights[head][:, 0] = column
    save_file({k: v.contiguous() for k, v in weights.items()}, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def _swap_top_two(logits):
    """Each position's two highest logits swapped."""
    values = np.array(logits, copy=True)
    order = np.argsort(values, axis=-1)
    top, second = order[..., -1:], order[..., -2:-1]
    a, b = np.take_along_axis(values, top, -1), np.take_along_axis(values, second, -1)
    np.put_along_axis(values, top, b, -1)
    np.put_along_axis(values, second, a, -1)
    return values


def test_a_decided_lm_head_fails_its_top1_row_when_the_top_two_are_swapped(tmp_path, monkeypatch):
    source = _decided_llama(tmp_path / "decided-llama")
    package = convert(str(source), "text-generation", tmp_path / "out", OPTIONS, validate=False).packages[0]
    honest = _validate(package, source, "text-generation", tmp_path)
    assert honest["passed"] is True, honest["message"]
    assert all(r["value"] == 1.0 for r in _rows(honest, "logits", "top1_agreement"))
    _tamper(monkeypatch, "logits", _swap_top_two)
    tampered = _validate(package, source, "text-generation", tmp_path)
    _fails_in_both_modes(tampered, "logits", "top1_agreement")
    assert max(r["value"] for r in _rows(tampered, "logits", "top1_agreement")) < 0.5


def test_an_embedding_fails_its_cosine_row_when_tampered(tiny_model, tmp_path, monkeypatch):
    source = tiny_model("distilbert")
    package = convert(str(source), "feature-extraction", tmp_path / "out", OPTIONS, validate=False).packages[0]
    assert _validate(package, source, "feature-extraction", tmp_path)["passed"] is True
    _tamper(monkeypatch, "last_hidden_state", lambda hidden: np.roll(np.asarray(hidden), 1, axis=-1))
    _fails_in_both_modes(_validate(package, source, "feature-extraction", tmp_path), "last_hidden_state", "cosine_similarity")


def test_a_segmentation_map_fails_its_label_row_when_tampered(tiny_model, tmp_path, monkeypatch):
    """A per-pixel label map has no near-tie allowance: a map with a tenth of its pixels
    relabelled fails the row (at least 99 % equal exact, 95 % in float16)."""
    source = tiny_model("segformer")
    package = convert(str(source), "semantic-segmentation", tmp_path / "out", OPTIONS, validate=False).packages[0]
    assert _validate(package, source, "semantic-segmentation", tmp_path)["passed"] is True

    def relabel(labels):
        labels = np.array(labels, copy=True)
        flat = labels.reshape(-1)
        flat[::10] = (flat[::10] + 1) % 3
        return labels

    _tamper(monkeypatch, "classLabels", relabel)
    tampered = _validate(package, source, "semantic-segmentation", tmp_path)
    _fails_in_both_modes(tampered, "classLabels", "label_agreement")
    assert all(0.85 < r["value"] < 0.95 for r in _rows(tampered, "classLabels", "label_agreement"))
