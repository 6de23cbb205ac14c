"""Unit tests of the engine's small parts: parsing, aliases, patches, docs in sync."""

from __future__ import annotations

import contextlib

import pytest

from converters.errors import UserInputError
from converters.options import ConversionOptions, SequenceLength
from converters.source import parse_hub_reference
from converters.tasks import ALIASES, normalize_task, task_from_architectures
from tests.conftest import ROOT


@pytest.mark.parametrize(
    "text,repo_id,revision",
    [
        ("openai-community/gpt2", "openai-community/gpt2", None),
        ("  owner/model.v2  ", "owner/model.v2", None),
        ("owner/model@dev", "owner/model", "dev"),
        ("https://huggingface.co/owner/model", "owner/model", None),
        ("https://huggingface.co/owner/model/tree/refs%2Fpr%2F3", "owner/model", "refs/pr/3"),
        ("https://huggingface.co/owner/model/blob/main/config.json", "owner/model", "main"),
        ("huggingface.co/owner/model", "owner/model", None),
        ("http://127.0.0.1:8000/owner/model", "owner/model", None),
    ],
)
def test_hub_references(text, repo_id, revision):
    ref = parse_hub_reference(text)
    assert (ref.repo_id, ref.revision) == (repo_id, revision)


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "No model given"),
        ("gpt2", "not a valid Hub model ID"),
        ("owner/na me", "not a valid Hub model ID"),
        ("owner/../etc", "not a valid Hub model ID"),
        ("https://huggingface.co/datasets/owner/data", "is a dataset, not a model"),
        ("https://huggingface.co/owner", "does not name a model"),
        ("ftp://huggingface.co/owner/model", "not a web address"),
    ],
)
def test_bad_hub_references(text, message):
    with pytest.raises(UserInputError, match=message):
        parse_hub_reference(text)


def test_sequence_length_forms():
    assert SequenceLength.parse("128").kind == "fixed"
    enumerated = SequenceLength.parse("256, 64,128,64")
    assert (enumerated.kind, enumerated.sizes, str(enumerated)) == ("enumerated", (64, 128, 256), "64,128,256")
    ranged = SequenceLength.parse("1..512")
    assert (ranged.kind, ranged.minimum, ranged.maximum, str(ranged)) == ("range", 1, 512, "1-512")
    with pytest.raises(UserInputError, match="at most 128 enumerated shapes"):
        SequenceLength.parse(",".join(str(i) for i in range(1, 200)))


def test_options_accept_loose_spellings_and_round_trip():
    options = ConversionOptions.from_strings(precision="FP32", minimum_deployment_target="ios18", naming="Exporters", sequence_length="64,128")
    assert (options.precision, options.minimum_deployment_target, options.naming) == ("float32", "iOS18", "exporters")
    assert ConversionOptions.from_dict(options.to_dict()) == options


def test_task_aliases_and_auto_detection():
    for alias, task in ALIASES.items():
        assert normalize_task(alias) == task
    assert normalize_task("Text_Generation") == "text-generation"
    assert task_from_architectures(["LlamaForCausalLM"]) == "text-generation"
    assert task_from_architectures(["GPT2LMHeadModel"]) == "text-generation"
    assert task_from_architectures(["T5ForConditionalGeneration"]) == "text2text-generation"
    assert task_from_architectures(["SegformerForSemanticSegmentation"]) == "semantic-segmentation"
    assert task_from_architectures(["BertModel"]) is None


def test_op_patches_are_removed_after_the_conversion():
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    from converters.backends.coreml.patches import op_patches

    mapping = _TORCH_OPS_REGISTRY.name_to_func_mapping
    before = dict(mapping)
    marker = lambda context, node: None  # noqa: E731
    with op_patches({"my_custom_op": marker, "gelu": marker}):
        assert mapping["alias"] is not None and mapping["my_custom_op"] is marker and mapping["gelu"] is marker
    assert mapping == before
    with pytest.raises(RuntimeError):
        with op_patches({"my_custom_op": marker}):
            raise RuntimeError("conversion failed")
    assert mapping == before


def test_readme_lists_the_registry():
    from converters.supported import markdown_table

    assert markdown_table() in (ROOT / "README.md").read_text(), "regenerate with: python -m converters.supported"


def test_a_timeout_during_export_is_not_taken_for_an_export_failure(monkeypatch, tiny_model, tmp_path):
    """rq stops a job by raising its timeout exception wherever the job is; the export
    fallback must let it through instead of quietly tracing on."""
    import torch

    from converters.export import convert

    class JobTimeout(Exception):
        pass

    def timed_out(*args, **kwargs):
        raise JobTimeout("job exceeded its timeout")

    monkeypatch.setattr(torch.export, "export", timed_out)
    monkeypatch.setattr("torch.export._trace._export", timed_out)  # the one-trace path (decompose.py)
    with pytest.raises(JobTimeout):
        convert(str(tiny_model("bert")), "fill-mask", tmp_path, validate=False)


def test_export_failures_fall_back_to_tracing(monkeypatch, tiny_model, tmp_path):
    import torch

    from converters.export import convert

    def unsupported(*args, **kwargs):
        raise torch._dynamo.exc.Unsupported("data-dependent control flow")

    monkeypatch.setattr(torch.export, "export", unsupported)
    monkeypatch.setattr("torch.export._trace._export", unsupported)  # the one-trace path (decompose.py)
    result = convert(str(tiny_model("bert")), "fill-mask", tmp_path, validate=False)
    assert result.report_json["packages"][0]["exporter"] == "torch.jit.trace"
    assert any("used torch.jit.trace instead" in w for w in result.report_json["warnings"])


@pytest.mark.parametrize("model_type, options, kept_whole", [
    ("llama", {}, "aten.linear.default"),
    ("bert", {}, "aten.linear.default"),
    ("bert", {"format": "coreai"}, "aten.scaled_dot_product_attention.default"),  # coreai-torch's table
    ("llama", {"kv_cache": "stateful", "minimum_deployment_target": "iOS18"}, None),
])
def test_a_fixed_shape_program_comes_out_of_one_trace_as_out_of_two(model_type, options, kept_whole, monkeypatch, tiny_model):
    """decompose.py: the same ops in the same order as export + run_decompositions(table) (which
    adds metadata asserts neither converter reads), the table's composite ops kept whole, the same
    inputs and weights; a program with dynamic shapes (the stateful cache) is captured the
    documented way."""
    import torch

    import converters.decompose as decompose
    from converters.backends import backend_for
    from converters.capture import capture, load
    from converters.plan import make_plan
    from converters.source import open_source

    plan = make_plan(open_source(str(tiny_model(model_type))), None, ConversionOptions.from_strings(**options))
    model = load(plan)
    table = backend_for(plan.options.format).decompositions()

    def captured():
        return capture(plan, model, plan.parts[0], table=table).program

    traced_once = []
    one_trace = decompose._in_one_trace
    monkeypatch.setattr(decompose, "_in_one_trace", lambda *args: traced_once.append(1) or one_trace(*args))
    ours = captured()
    if kept_whole is None:
        assert not traced_once and ours.graph_signature.buffers_to_mutate
        return
    assert traced_once

    def documented(*args):
        raise RuntimeError("the documented way only")

    monkeypatch.setattr(decompose, "_in_one_trace", documented)
    theirs = captured()

    def ops(program):
        return [str(n.target) for n in program.graph.nodes
                if n.op == "call_function" and n.target != torch.ops.aten._assert_tensor_metadata.default]

    assert ops(ours) == ops(theirs) and kept_whole in ops(ours)
    assert [(s.kind, type(s.arg).__name__) for s in ours.graph_signature.input_specs] == \
           [(s.kind, type(s.arg).__name__) for s in theirs.graph_signature.input_specs]
    weights = sorted((tuple(t.shape), float(t.double().sum())) for t in ours.state_dict.values())
    assert weights == sorted((tuple(t.shape), float(t.double().sum())) for t in theirs.state_dict.values())


def test_one_trace_leaves_the_modules_attributes_as_they_were():
    """A forward that caches a tensor in a plain dict (LeViT's attention biases): after the trace
    the module runs eagerly as before, as after torch.export's own trace."""
    import torch

    from converters.decompose import decomposed_program

    class Cached(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.full((4,), 2.0))
            self.cache = {}

        def forward(self, x):
            if "bias" not in self.cache:
                self.cache["bias"] = self.scale * 3
            return torch.nn.functional.linear(x, torch.eye(4)) + self.cache["bias"]

    module = Cached().eval()
    x = torch.ones(1, 4)
    with torch.no_grad():
        program = decomposed_program(module, (x,))
    assert module.cache == {}
    assert torch.equal(module(x), program.module()(x)) and float(module(x)[0, 0]) == 7.0


def _small_program(faster: bool):
    """A program with what the cheaper pipelines touch: a transpose pair the transpose pass
    cancels, a float32 constant beyond float16's range (its op stays float32), a symbolic axis."""
    import coremltools as ct
    import torch
    from coremltools.converters.mil.converter import _reset_conversion_state

    from converters.backends.coreml.pass_speedups import faster_pipelines, printed_only_for_debug_logs
    from converters.backends.coreml.patches import finite_float16_constants

    _reset_conversion_state()  # as the pipeline does (backend._convert): a package loaded before advanced its counters

    class Model(torch.nn.Module):
        def forward(self, x):
            y = torch.relu(x.transpose(1, 2)).transpose(1, 2) + 1.0
            return y * 70000.0, torch.softmax(y, dim=-1)

    x = torch.rand(1, 5, 4)
    seq = torch.export.Dim("seq", min=2, max=8)
    program = torch.export.export(Model().eval(), (x,), dynamic_shapes=({1: seq},), strict=False).run_decompositions({})
    with finite_float16_constants() if faster else contextlib.nullcontext(), faster_pipelines(0) if faster else contextlib.nullcontext():
        model = ct.convert(program, inputs=[ct.TensorType(name="x", shape=(1, ct.RangeDim(2, 8, default=5), 4))],
                           convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18, skip_model_load=True)
    text = str(model._mil_program)
    with printed_only_for_debug_logs():
        unprinted = str(model._mil_program)
    return model.get_spec(), text, unprinted


def test_a_package_is_named_as_in_a_fresh_process(tiny_model, tmp_path):
    """coremltools resets its op-name counters only after a conversion; loading a package
    (validation's executor) advances them: the pipeline starts each conversion from zero."""
    from coremltools.converters.mil import Builder as mb

    from converters.export import convert

    def package_bytes(out):
        result = convert(str(tiny_model("bert")), "fill-mask", out, validate=False)
        return (result.packages[0] / "Data/com.apple.CoreML/model.mlmodel").read_bytes()

    first = package_bytes(tmp_path / "a")
    mb.name_count["const"] += 3  # what a package load leaves behind
    assert package_bytes(tmp_path / "b") == first


def test_a_core_ml_capture_records_no_stack_traces_and_its_package_is_the_same(monkeypatch, tiny_model, tmp_path):
    """coremltools writes none into a package: without them, the same bytes; Core AI keeps them."""
    from converters.backends import backend_for
    from converters.backends.coreml.backend import CoreMLBackend
    from converters.capture import capture, load
    from converters.export import convert
    from converters.plan import make_plan
    from converters.source import open_source

    plan = make_plan(open_source(str(tiny_model("bert"))), "fill-mask", ConversionOptions())
    model = load(plan)

    def traced(source_lines):
        program = capture(plan, model, plan.parts[0], source_lines=source_lines).program
        return [n for n in program.graph.nodes if n.op == "call_function" and n.stack_trace]

    assert not traced(False) and traced(True)
    assert backend_for("coreml").keeps_source_lines is False and backend_for("coreai").keeps_source_lines is True

    def package(out):
        folder = convert(str(tiny_model("bert")), "fill-mask", out, validate=False).packages[0] / "Data/com.apple.CoreML"
        return [path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()]

    without = package(tmp_path / "a")
    monkeypatch.setattr(CoreMLBackend, "keeps_source_lines", True)
    assert package(tmp_path / "b") == without


def test_the_cheaper_coremltools_pipelines_give_coremltools_own_program():
    """pass_speedups.py and the float16 pass's overflow check measured once per constant
    (patches.py): the program out is coremltools' own, op for op."""
    from converters.backends.coreml.pass_speedups import UNPRINTED

    ours, text, unprinted = _small_program(faster=True)
    theirs, _, _ = _small_program(faster=False)
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)
    ops = [op.type for op in next(iter(ours.mlProgram.functions["main"].block_specializations.values())).operations]
    assert "transpose" not in ops  # the pair was cancelled: the types were inferred again
    assert 'mul(x=%add_7_cast_fp16_to_fp32, y=70000.0' in text  # the product beyond float16 stays float32
    assert unprinted == UNPRINTED and "main" in text  # printed again as before once the context ends


def test_constexpr_dependencies_are_propagated_as_coremltools_propagates_them():
    """pass_speedups.propagate_nonreplaceable_vars gives every var the set coremltools' own
    Block._propagate_nonreplaceable_vars gives it, each var a set of its own: on a program with a
    compressed weight (a constexpr op), a shape op (whose output depends on nothing), an inner
    block (a cond's branches) and a list input (concat's values)."""
    import coremltools as ct
    import numpy as np
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Block

    from converters.backends.coreml.pass_speedups import propagate_nonreplaceable_vars

    @mb.program(input_specs=[mb.TensorSpec(shape=(4, 4))], opset_version=ct.target.iOS18)
    def program(x):
        weight = mb.constexpr_blockwise_shift_scale(data=np.arange(16, dtype=np.int8).reshape(4, 4),
                                                    scale=np.full((4, 1), 0.5, np.float32))
        y = mb.matmul(x=x, y=weight)
        branch = mb.cond(pred=mb.greater(x=mb.reduce_sum(x=y), y=0.0), _true_fn=lambda: mb.add(x=y, y=weight),
                         _false_fn=lambda: mb.mul(x=x, y=2.0))
        return branch, mb.shape(x=y), mb.concat(values=[x, y], axis=0), mb.add(x=x, y=1.0)

    main = program.functions["main"]

    def outputs(block):
        for op in block.operations:
            for inner in op.blocks:
                yield from outputs(inner)
            yield from op.outputs or []

    def sets() -> dict:
        return {var.name: {upstream.name for upstream in var.nonreplaceable_vars_upstream} for var in outputs(main)}

    Block.__dict__["_propagate_nonreplaceable_vars"](main)
    theirs = sets()
    for var in outputs(main):  # stale sets: the propagation must replace every one
        var._nonreplaceable_vars_upstream = {var}
    propagate_nonreplaceable_vars(main)
    assert sets() == theirs
    assert theirs["cond_0"] == theirs["concat_0"] == {"constexpr_blockwise_shift_scale_0"} and theirs["mul_0"] == set()
    assert theirs["shape_0"] == set() and theirs["add_1"] == set()
    made = [var._nonreplaceable_vars_upstream for var in outputs(main)]
    assert len({id(upstream) for upstream in made}) == len(made)  # no two vars share a set

    # No constexpr op (a program before compression): nothing to recompute, unless a var holds a stale set.
    @mb.program(input_specs=[mb.TensorSpec(shape=(4, 4))], opset_version=ct.target.iOS18)
    def plain(x):
        return mb.add(x=mb.matmul(x=x, y=np.eye(4, dtype=np.float32)), y=1.0)

    main = plain.functions["main"]
    propagate_nonreplaceable_vars(main)
    assert all(not var.nonreplaceable_vars_upstream for var in outputs(main))
    stale = next(iter(outputs(main)))
    stale._nonreplaceable_vars_upstream = {stale}  # as if its op had been a constexpr op a pass replaced
    propagate_nonreplaceable_vars(main)
    assert all(not var.nonreplaceable_vars_upstream for var in outputs(main))


@pytest.mark.parametrize("value", [[1.0, -65504.0], [65505.0], [-70000.0, 2.0], [1e38, -3e38], [float("inf"), 1.0],
                                   [float("nan"), 70000.0], [float("nan")], [], 3.0, 1e5])
def test_the_float16_overflow_check_is_coremltools_own(value):
    import numpy as np

    from converters.backends.coreml.patches import beyond_float16

    array = np.asarray(value, dtype=np.float32)
    magnitude = np.abs(np.expand_dims(array, 0))  # FP16ComputePrecision.fp16_overflow, coremltools 9.0
    theirs = np.max(magnitude[np.where(magnitude < 1e38)], initial=0.0) > 65504
    assert beyond_float16(array) == theirs


@pytest.mark.parametrize("value", [[1.0, -65504.0], [65505.0], [-70000.0, 2.0], [1e38, -3e38], [float("inf"), 1.0],
                                   [float("nan"), 70000.0], [float("nan")], [], [9.9e37, 1.0], [-1e-9, 0.0, -0.0, 3e-8, 2.9e-8,
                                   2.98023224e-8, 5.96e-8, 1e-30, -1e-30, 1.0, 65519.0, -65520.0, float("-inf")]])
def test_the_core_ai_float16_helpers_are_coreai_opts_own(value):
    """cast_speedups.py: the overflow answer and the float16 tensor are coreai-opt's, bit for bit,
    on its edge cases (NaN, infinities, 1e38 taken as infinity, flush-to-zero and rounding to ±2⁻²⁴)."""
    import torch
    from coreai_opt._utils.casting_utils import cast_tensor_to_fp16, check_tensor_overflow_fp16

    from converters.backends.coreai.cast_speedups import beyond_float16, to_float16

    tensor = torch.tensor(value, dtype=torch.float32)
    assert beyond_float16(tensor) == check_tensor_overflow_fp16(tensor)
    assert beyond_float16(tensor.to(torch.float16)) is False and check_tensor_overflow_fp16(tensor.to(torch.float16)) is False
    ours, theirs = to_float16(tensor), cast_tensor_to_fp16(tensor)
    assert ours.dtype == theirs.dtype == torch.float16
    assert torch.equal(ours.view(torch.int16), theirs.view(torch.int16))  # the same bits, signed zeros and NaNs too


def test_the_core_ai_cast_pass_writes_the_same_program_with_its_faster_helpers():
    """coreai-opt's whole float16 pass on a small program, with and without cast_speedups.py: the
    same graph and the same tensors (a weight beyond float16 stays float32, tiny weights kept at ±2⁻²⁴)."""
    import torch
    from coreai_opt import casting

    from converters.backends.coreai.cast_speedups import faster_float16_cast

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.small = torch.nn.Linear(8, 8)
            self.big = torch.nn.Linear(8, 4)
            with torch.no_grad():
                self.small.weight[0, :4] = torch.tensor([1e-9, -1e-9, 0.0, 4e-8])
                self.big.weight[0, 0] = 70000.0

        def forward(self, x):
            return self.big(torch.relu(self.small(x)))

    def cast(faster: bool):
        program = torch.export.export(Model().eval(), (torch.randn(2, 8),))
        with (faster_float16_cast() if faster else contextlib.nullcontext()):
            program = casting.cast_fp32_to_fp16(program)
        return program

    torch.manual_seed(0)
    ours = cast(True)
    torch.manual_seed(0)
    theirs = cast(False)
    assert str(ours.graph) == str(theirs.graph)
    assert ours.state_dict.keys() == theirs.state_dict.keys()
    for name, tensor in theirs.state_dict.items():
        assert ours.state_dict[name].dtype == tensor.dtype and torch.equal(ours.state_dict[name], tensor), name
    assert theirs.state_dict["big.weight"].dtype == torch.float32  # past float16: left float32 by the pass
    assert theirs.state_dict["small.weight"].dtype == torch.float16


def test_coremltools_collects_garbage_only_for_a_model_worth_it():
    """coremltools' convert ends with a full collection; while ours runs, it follows the
    pipeline's rule (memory.release): a tiny model's conversion skips it, a big one's keeps it."""
    import gc

    from coremltools.converters import _converters_entry

    from converters.backends.coreml.pass_speedups import collected_only_when_worth_it
    from converters.memory import WORTH_COLLECTING

    full = []
    callback = lambda phase, info: full.append(phase) if phase == "start" and info["generation"] == 2 else None  # noqa: E731
    gc.callbacks.append(callback)
    try:
        for parameters, expected in ((1000, 0), (WORTH_COLLECTING, 1)):
            full.clear()
            with collected_only_when_worth_it(parameters):
                _converters_entry.gc.collect()
            assert len(full) == expected, parameters
    finally:
        gc.callbacks.remove(callback)
    assert _converters_entry.gc is gc
