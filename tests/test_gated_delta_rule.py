"""Qwen3.5's gated delta rule for one call without a loop over its tokens (issue 27,
converters/configs/gated_delta.py): equal to transformers' chunked prefill and its one-token step,
the state carried across calls, and captured with a ranged length, converted and run by the
reference executor at two lengths as a stateful package would call it (a prompt, then one token)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from converters.configs.gated_delta import gated_delta_call, inverse_levels, unit_lower_inverse

KEY_HEADS, VALUE_HEADS, KEY_SIZE, VALUE_SIZE = 2, 4, 8, 6
# Per value head: decays from long memory (0.02 → exp(g) ≈ 0.986 a token) to none (16).
A = torch.tensor([0.02, 0.2, 2.0, 16.0])
MAX = 64  # the converted program's longest call


def inputs(n: int, seed: int = 0, batch: int = 1):
    """(query, key, value, g, beta, state) as Qwen3_5GatedDeltaNet hands them over: g =
    −A·softplus(a + dt_bias), beta = sigmoid(b), and a nonzero carried state."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, n, KEY_HEADS, KEY_SIZE, generator=gen)
    k = torch.randn(batch, n, KEY_HEADS, KEY_SIZE, generator=gen)
    v = torch.randn(batch, n, VALUE_HEADS, VALUE_SIZE, generator=gen)
    g = -A * F.softplus(torch.randn(batch, n, VALUE_HEADS, generator=gen))
    beta = torch.randn(batch, n, VALUE_HEADS, generator=gen).sigmoid()
    state = 0.5 * torch.randn(batch, VALUE_HEADS, KEY_SIZE, VALUE_SIZE, generator=gen)
    return q, k, v, g, beta, state


def transformers_rule(chunked: bool, q, k, v, g, beta, state):
    from transformers.models.qwen3_5.modeling_qwen3_5 import torch_chunk_gated_delta_rule, torch_recurrent_gated_delta_rule

    rule = torch_chunk_gated_delta_rule if chunked else torch_recurrent_gated_delta_rule
    return rule(q, k, v, g=g, beta=beta, initial_state=state, output_final_state=True, use_qk_l2norm_in_kernel=True)


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours.float() - theirs.float()).abs().max() / theirs.float().abs().max())


@pytest.mark.parametrize("n", [1, 2, 7, 63, 64, 65, 200])
def test_one_call_equals_transformers_chunked_prefill_and_step(n):
    args = inputs(n, seed=n, batch=2)
    out, state = gated_delta_call(*args, max_length=256)
    chunk_out, chunk_state = transformers_rule(True, *args)
    loop_out, loop_state = transformers_rule(False, *args)
    assert out.shape == chunk_out.shape and state.shape == chunk_state.shape
    for theirs, their_state in ((chunk_out, chunk_state), (loop_out, loop_state)):
        assert relative(out, theirs) < 2e-5, n
        assert relative(state, their_state) < 2e-5, n


def test_the_state_carries_from_a_prompt_through_one_token_calls():
    q, k, v, g, beta, state = inputs(40, seed=3)
    whole_out, whole_state = transformers_rule(True, q, k, v, g, beta, state)
    outs = []
    out, carried = gated_delta_call(q[:, :33], k[:, :33], v[:, :33], g[:, :33], beta[:, :33], state, max_length=64)
    outs.append(out)
    for t in range(33, 40):
        out, carried = gated_delta_call(q[:, t:t + 1], k[:, t:t + 1], v[:, t:t + 1], g[:, t:t + 1],
                                        beta[:, t:t + 1], carried, max_length=64)
        outs.append(out)
    assert relative(torch.cat(outs, dim=1), whole_out) < 2e-5
    assert relative(carried, whole_state) < 2e-5
    # No state handed in: a fresh cache (zeros), as transformers' first call.
    fresh_out, fresh_state = gated_delta_call(q, k, v, g, beta, None, max_length=64)
    theirs_out, theirs_state = transformers_rule(True, q, k, v, g, beta, None)
    assert relative(fresh_out, theirs_out) < 2e-5 and relative(fresh_state, theirs_state) < 2e-5


def test_the_inverse_needs_its_levels_and_holds_alike_keys():
    """Exact with enough levels and not with one fewer (the count is what makes it right); keys
    all alike (N's powers grow as binomials, past 2^59 at 64 tokens) give the true inverse."""
    n = 64
    strictly_lower = torch.ones(n, n).tril(-1)
    exact = torch.linalg.solve_triangular(torch.eye(n) + strictly_lower, torch.eye(n), upper=False, unitriangular=True)
    assert inverse_levels(n) == 6 and inverse_levels(65) == 7 and inverse_levels(1) == 0
    assert torch.allclose(unit_lower_inverse(strictly_lower, inverse_levels(n)), exact, atol=1e-6)
    assert not torch.allclose(unit_lower_inverse(strictly_lower, inverse_levels(n) - 1), exact, atol=1e-2)
    nine = strictly_lower[:9, :9]
    assert torch.equal(unit_lower_inverse(nine, 9), unit_lower_inverse(nine, inverse_levels(9)))  # extra levels add zero


class _Call(torch.nn.Module):
    def forward(self, query, key, value, g, beta, state):
        return gated_delta_call(query, key, value, g, beta, state, max_length=MAX)


NAMES = ("query", "key", "value", "g", "beta", "recurrent_state")  # "state" is renamed by coremltools


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A float16 program of one call, captured by torch.export with a ranged length as
    converters/capture.py does, converted as converters/backends/coreml/backend.py does, saved
    and loaded by the reference executor."""
    import coremltools as ct

    from converters.backends.coreml.executor import ReferenceExecutor
    from converters.backends.coreml.patches import op_patches

    example = inputs(16)
    n = torch.export.Dim("n", min=2, max=MAX)
    dynamic = tuple({1: n} if name != "recurrent_state" else None for name in NAMES)
    with torch.no_grad():
        program = torch.export.export(_Call(), example, dynamic_shapes=dynamic, strict=False).run_decompositions({})
    ranged = ct.RangeDim(lower_bound=1, upper_bound=MAX, default=MAX)
    specs = [ct.TensorType(name=name, shape=ct.Shape(tuple(ranged if i == 1 and name != "recurrent_state" else d
                                                            for i, d in enumerate(x.shape))))
             for name, x in zip(NAMES, example)]
    with op_patches(float16=True):
        mlmodel = ct.convert(program, inputs=specs, outputs=[ct.TensorType(name="output"), ct.TensorType(name="final_state")],
                             convert_to="mlprogram", compute_precision=ct.precision.FLOAT16,
                             minimum_deployment_target=ct.target.iOS18, skip_model_load=True)
    path = tmp_path_factory.mktemp("gated_delta") / "call.mlpackage"
    mlmodel.save(str(path))
    return ReferenceExecutor(path)


def test_converted_call_runs_a_prompt_then_a_token_as_pytorch(converted):
    ops = {op for op, _ in converted.op_summary}
    assert not ops & {"while_loop", "cond"}, ops  # no loop left in the program
    q, k, v, g, beta, state = inputs(38, seed=5)
    expected_out, expected_state = transformers_rule(True, q, k, v, g, beta, state)
    carried = {"fp32": state.numpy(), "fp16": state.numpy()}
    outs = {"fp32": [], "fp16": []}
    for start, stop in ((0, 37), (37, 38)):  # the prompt, then one token with the state carried in
        feed = {name: x[:, start:stop].numpy() for name, x in zip(NAMES[:5], (q, k, v, g, beta))}
        for mode in ("fp32", "fp16"):
            result = converted.predict({**feed, "recurrent_state": carried[mode]}, mode=mode)
            outs[mode].append(torch.from_numpy(np.asarray(result["output"], dtype=np.float32)))
            carried[mode] = np.asarray(result["final_state"], dtype=np.float32)
    # fp32: the float16 program's arithmetic in float32, its constants (the 1/sqrt(key size) scale)
    # still float16 values (2^-11 apart); fp16: every op's result rounded to float16 too.
    for mode, tolerance in (("fp32", 5e-4), ("fp16", 5e-3)):  # measured 1.1e-4 and 1.4e-3
        errors = relative(torch.cat(outs[mode], dim=1), expected_out), relative(torch.from_numpy(carried[mode]), expected_state)
        assert max(errors) < tolerance, (mode, errors)
