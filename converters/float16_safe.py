"""Float16-safe formulations of the ops that overflow on real weights.

Real pretrained LLMs carry *massive activations*: a few residual-stream channels reach
1e3–1e5 (SmolLM2-135M: 2.2e4 in 17 of its 30 layers). RMSNorm squares its input, so in
float16 arithmetic — how the GPU and the Neural Engine run a float16 package — x² reaches
5e8, beyond float16's 65504: the norm returns inf/0 and the model emits garbage. Tiny
random test models never show this.

While a float16 package is captured, each RMSNorm module computes the same function in a
form whose every intermediate stays in range:

    s = max(max|x|, 1)                 (per row)
    RMSNorm(x; eps) = RMSNorm(x / s; eps / s²)

An RMSNorm is invariant to scaling its input when eps scales with it, so this is exact in
real arithmetic; in float16, x / s lies in [-1, 1], its mean square in [0, 1], and eps / s²
is computed as eps / s / s (s² itself would overflow). s is at least 1 so rows of small
values are left as they are (no division by a tiny max). The cost is four cheap element
ops and a reduce_max per norm; every op stays on the Neural Engine.

Options weighed (issue #8), for RMSNorm:
- Core ML's fused `layer_norm` on [x, -x] (mean 0, so it equals an RMSNorm): one op, but
  whether it overflows depends on how each runtime computes the variance inside the op,
  which cannot be checked off a Mac; the reference executor computes fused ops in float32,
  so it would vouch for the device without evidence. It also doubles the tensor width.
- float32 islands (coremltools' `op_selector`): exact, but float32 ops never run on the
  Neural Engine, so every layer would hop between the Neural Engine and the CPU/GPU twice.
- scaling (chosen): safe op by op in plain float16, as the executor emulates it.

LayerNorm is left alone: torch's layer_norm becomes Core ML's single `layer_norm` op, whose
variance the runtimes compute internally; attention scores are scaled before the matmul by
transformers already (SmolLM2's largest q·kᵀ stays far below the limit), and softmax
subtracts its maximum. The validator's fp16 emulation is what proves a package; a model
whose values themselves exceed 65504 still fails it, as it must.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager

import torch

FLOAT16_MAX = 65504.0


def is_rms_norm(module: torch.nn.Module) -> bool:
    """transformers' RMSNorm modules (LlamaRMSNorm, Qwen3RMSNorm, GemmaRMSNorm, T5LayerNorm…):
    a weight and an epsilon, and a forward that does x * rsqrt(mean(x²) + eps)."""
    name = type(module).__name__
    return ("RMSNorm" in name or name == "T5LayerNorm") and _eps_attribute(module) is not None


def _eps_attribute(module: torch.nn.Module) -> str | None:
    for attribute in ("variance_epsilon", "eps"):
        if isinstance(getattr(module, attribute, None), float):
            return attribute
    return None


def _scaled_forward(module: torch.nn.Module, original, attribute: str, eps: float):
    def forward(hidden_states, *args, **kwargs):
        scale = hidden_states.abs().amax(dim=-1, keepdim=True).clamp(min=1.0)
        # The module's own forward, on x / s with eps / s² (a tensor broadcasting per row):
        # every RMSNorm variant (weight, 1 + weight, dtype casts) stays as transformers wrote it.
        setattr(module, attribute, eps / scale / scale)
        try:
            return original(hidden_states / scale, *args, **kwargs)
        finally:
            setattr(module, attribute, eps)

    return forward


def _takes_input_alone(module: torch.nn.Module) -> bool:
    """Whether the module's forward needs nothing but its input. A gated RMSNorm (Qwen3-Next's,
    Qwen3.5's, OLMo-hybrid's: forward(hidden_states, gate), output norm(x) * silu(gate)) needs
    a gate, which the probe would have to invent: a probe at one made-up gate cannot show the
    rewrite exact at the gates the model passes, so such a norm is left as transformers wrote
    it (never silently changed), as LayerNorm is. That is the safe side: it normalises a linear
    attention's per-head output, not the residual stream where massive activations live, and
    validation's float16 emulation still judges the package. (Mamba's optional gate multiplies
    the input before the norm, so the scaling stays exact with it: those are rewritten.)

    Read in transformers 5.23, all three compute RMSNorm(x) * silu(gate): the norm before the
    gate, so the scaled form would be exact for them too (the gate never enters the mean
    square). They stay as written until a real checkpoint shows their input near float16's
    limit; tests/test_isolation.py pins that they are left alone and that the model still
    converts and validates (Qwen3.5 in tests/test_generic_architectures.py)."""
    try:
        parameters = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return False
    required = [p for p in parameters[1:] if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return bool(parameters) and not required


def _scale_invariant(module: torch.nn.Module, forward) -> bool:
    """Whether the scaled form computes what the module computes (on a probe), so a norm
    of another shape of formula is never silently changed. A module the probe cannot even
    call (it needs other inputs or shapes) is not rewritten either."""
    if not _takes_input_alone(module):
        return False
    width = module.weight.shape[-1] if getattr(module, "weight", None) is not None else 8
    probe = torch.randn(2, width, generator=torch.Generator().manual_seed(0)) * torch.tensor([[3.0], [300.0]])
    try:
        with torch.no_grad():
            expected = module(probe)
            actual = forward(probe)
        return torch.allclose(expected, actual, rtol=1e-4, atol=1e-5)
    except Exception:  # noqa: BLE001 - a norm of a form the probe does not fit: left as it is
        return False


@contextmanager
def float16_safe(model: torch.nn.Module):
    """Within the block, every RMSNorm in `model` computes in its float16-safe form.
    Yields the number of modules rewritten; the model is restored afterwards."""
    patched = []
    try:
        for module in model.modules():
            if not is_rms_norm(module):
                continue
            attribute = _eps_attribute(module)
            forward = _scaled_forward(module, module.forward, attribute, getattr(module, attribute))
            if not _scale_invariant(module, forward):
                continue
            module.forward = forward
            patched.append(module)
        yield len(patched)
    finally:
        for module in patched:
            del module.forward  # back to the class's forward
