"""Rotary position embeddings that transformers computes in complex numbers, computed in real
arithmetic while a model is captured (capture.py).

Llama 4's text model builds its rotary frequencies with `torch.polar` and rotates queries and
keys as complex numbers (`view_as_complex`, a complex product, `view_as_real`). A Core ML
program has no complex tensors (coremltools lowers the few complex ops it has, for FFTs, to
real ones) and coremltools 9.0 converts neither `polar` nor `view_as_complex`. The rotation is the same
products in real tensors: a pair (a, b) of a head's channels is the complex a + ib, and

    (a + ib)(cos θ + i sin θ) = (a cos θ − b sin θ) + i (a sin θ + b cos θ),

so the rotary module returns (cos θ, sin θ) stacked on a last axis of 2 (times the same
attention scaling) and the rotation pairs channels the same way, interleaved. Nothing else of
the model changes; validation compares the package with the model as transformers runs it
(complex), so the rewrite is checked against transformers' own rotation.
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager

import torch

# model module -> (the rotary module's class, the rotation function the attention calls)
COMPLEX_ROTARY = {
    "transformers.models.llama4.modeling_llama4": ("Llama4TextRotaryEmbedding", "apply_rotary_emb"),
}


def real_frequencies(self, x, position_ids):
    """The rotary module's forward: (cos θ, sin θ) [batch, seq, head_dim / 2, 2] for the
    complex polar(1, θ) [batch, seq, head_dim / 2] it returns."""
    angles = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
    return torch.stack((torch.cos(angles), torch.sin(angles)), dim=-1) * self.attention_scaling


def real_rotation(xq: torch.Tensor, xk: torch.Tensor, freqs_cis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """apply_rotary_emb on [batch, seq, heads, head_dim] queries and keys with real_frequencies'
    (cos, sin): each interleaved channel pair rotated as the complex product does."""
    cos, sin = freqs_cis[..., 0][:, :, None, :], freqs_cis[..., 1][:, :, None, :]

    def rotate(x: torch.Tensor) -> torch.Tensor:
        pairs = x.float().reshape(*x.shape[:-1], -1, 2)
        real, imaginary = pairs[..., 0], pairs[..., 1]
        return torch.stack((real * cos - imaginary * sin, real * sin + imaginary * cos), dim=-1).flatten(3).type_as(x)

    return rotate(xq), rotate(xk)


@contextmanager
def real_rotary(model: torch.nn.Module):
    """Within the block, `model`'s complex rotary embeddings (if any) compute in real
    arithmetic; restored afterwards. Yields whether anything was switched."""
    switched, functions = [], []
    try:
        for module_name, (rotary_class, function_name) in COMPLEX_ROTARY.items():
            rotaries = [m for m in model.modules() if type(m).__name__ == rotary_class and type(m).__module__ == module_name]
            if not rotaries:
                continue
            library = importlib.import_module(module_name)
            functions.append((library, function_name, getattr(library, function_name)))
            setattr(library, function_name, real_rotation)
            for rotary in rotaries:
                rotary.forward = real_frequencies.__get__(rotary)
                switched.append(rotary)
        yield bool(switched)
    finally:
        for rotary in switched:
            del rotary.forward  # back to the class's forward
        for library, function_name, original in functions:
            setattr(library, function_name, original)
