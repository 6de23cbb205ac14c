"""Mixture-of-experts layers in ops Core ML has, while a model is captured (capture.py).

transformers 5 runs a MoE model's experts through one switch, `config._experts_implementation`
(the `@use_experts_implementation` experts classes of Qwen3-MoE, OLMoE, Granite-MoE, Mixtral,
GPT-OSS, Gemma 4's MoE block, …). Its CPU default, "grouped_mm", sorts the tokens by expert
and counts them with `histc` — an op coremltools has no converter for — and "eager" loops over
the experts a token picked (a data-dependent loop, which no fixed program can hold).

The router itself (softmax, `topk`, optional renormalisation) converts as it is. For the experts
we register one more implementation in transformers' own `ExpertsInterface` and switch to it
with `set_experts_implementation` for the capture only, as transformers' own ONNX and
ExecuTorch exporters switch to "batched_mm":

- "coreml_dense": every expert runs on every token (two batched matmuls against the stacked
  expert weights: [E, tokens, …]), and the top-k routing weights, spread to a dense [tokens, E]
  matrix with a comparison against 0..E-1 (zero for the experts a token did not pick), weight
  and sum their outputs. Chosen over top-k + gather (transformers' "batched_mm", which gathers
  each picked expert's weight matrices per token): the gather copies tokens × k whole expert
  matrices, so a 128-token prefill of a 64-expert, top-8 model gathers 8 GB of weights, while
  dense evaluation reads each weight once, as a dense model of the same total size does, and
  is plain matmuls against constant weights (what the Neural Engine runs). Its cost is E / k
  times the experts' arithmetic (2x for Granite-MoE's 8 / top-2 … 16x for 128 / top-8): cheap
  for the small expert counts of models that fit a device at all — the package holds every
  expert's weights either way, so its size is the model's total, not its active, size.

JetMoE routes outside that switch, in its own modules: its MLP experts (JetMoeMoE) and its
attention's query and output projections (JetMoeMoA, a mixture of attention heads) sort the
tokens by expert and split them into groups whose sizes the routing counts while it runs
(`.tolist()`, then `index_add`). They are evaluated densely the same way while captured
(`dense_jetmoe_*`): every expert's projection of every token, weighted by the dense routing
matrix; the attention's output projection first mixes each token's k head groups per expert
(weights zero for the experts it did not pick), then projects once per expert. Llama 4's MoE
already evaluates every expert; its forward is only rewritten to keep the experts' axis apart
(`dense_llama4_moe`).

The reference that validation compares the package with is the model as transformers runs it
(its default implementation, outside the capture): so the package is checked against
transformers' own routing, not against this rewrite.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

DENSE = "coreml_dense"


def _project(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, transposed: bool) -> torch.Tensor:
    """hidden [tokens, in] through every expert's weight ([E, out, in], or [E, in, out]
    transposed) -> [E, tokens, out]."""
    out = torch.matmul(hidden.unsqueeze(0), weight if transposed else weight.transpose(-1, -2))
    return out if bias is None else out + bias.unsqueeze(1)


def dense_experts_forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
    """transformers' experts forward (the arguments and attributes `@use_experts_implementation`
    gives every experts class: has_gate, has_bias, is_transposed, _apply_gate, …), evaluated
    densely: the same sum over each token's picked experts, with zero weight for the others."""
    if self.has_gate:
        weight, bias = self.gate_up_proj, self.gate_up_proj_bias if self.has_bias else None
    else:
        weight, bias = self.up_proj, self.up_proj_bias if self.has_bias else None
    projected = _project(hidden_states, weight, bias, self.is_transposed)  # [E, tokens, 2I or I]
    projected = self._apply_gate(projected) if self.has_gate else self.act_fn(projected)
    # The down projection, per expert: [E, tokens, I] @ [E, I, H] -> [E, tokens, H].
    down = self.down_proj if self.is_transposed else self.down_proj.transpose(-1, -2)
    out = torch.matmul(projected, down)
    if self.has_bias:
        out = out + self.down_proj_bias.unsqueeze(1)
    if self.has_post_expert_norm:
        out = self.post_expert_norm(out)
    experts = torch.arange(weight.shape[0], device=top_k_index.device)
    # [tokens, k, E] one-hot of the picks, times their weights, summed over k: [tokens, E].
    routing = ((top_k_index.unsqueeze(-1) == experts).to(top_k_weights.dtype) * top_k_weights.unsqueeze(-1)).sum(dim=1)
    combined = (out * routing.transpose(0, 1).unsqueeze(-1).to(out.dtype)).sum(dim=0)
    return combined.to(hidden_states.dtype)


def _register() -> None:
    from transformers.integrations.moe import ExpertsInterface

    if DENSE not in ExpertsInterface._global_mapping:
        ExpertsInterface.register(DENSE, dense_experts_forward)


def has_experts(model: torch.nn.Module) -> bool:
    """Whether the model routes tokens to experts through transformers' experts switch."""
    can_set = getattr(model, "_can_set_experts_implementation", None)
    return bool(can_set and can_set()) and any(hasattr(m, "has_gate") and hasattr(m, "is_transposed") for m in model.modules())


def _jetmoe_routing(router, x: torch.Tensor):
    """JetMoeTopKGating's decision as dense tensors: the one-hot picks [tokens, k, E] and their
    gates [tokens, k] (softmax over the k top logits, as transformers computes them)."""
    logits = router.layer(x).float()
    top_logits, top_index = logits.topk(router.top_k, dim=1)
    gates = torch.softmax(top_logits, dim=1).type_as(x)
    experts = torch.arange(router.num_experts, device=x.device)
    return (top_index.unsqueeze(-1) == experts).to(x.dtype), gates, logits


def dense_jetmoe_mlp(self, layer_input: torch.Tensor) -> torch.Tensor:
    """JetMoeMoE.forward, every expert on every token."""
    bsz, length, size = layer_input.shape
    x = layer_input.reshape(-1, size)
    picks, gates, _ = _jetmoe_routing(self.router, x)
    hidden = torch.matmul(x.unsqueeze(0), self.input_linear.weight.transpose(-1, -2))  # [E, tokens, 2I]
    gate, up = hidden.chunk(2, dim=-1)
    out = torch.matmul(self.activation(gate) * up, self.output_linear.weight.transpose(-1, -2))  # [E, tokens, H]
    routing = (picks * gates.unsqueeze(-1)).sum(dim=1)  # [tokens, E]
    combined = (out * routing.transpose(0, 1).unsqueeze(-1)).sum(dim=0)
    return combined.view(bsz, length, size) + self.bias


def dense_jetmoe_map(self, layer_input: torch.Tensor):
    """JetMoeMoA.map: each token's k query projections, by the experts it picked."""
    bsz, length, size = layer_input.shape
    x = layer_input.reshape(-1, size)
    picks, gates, logits = _jetmoe_routing(self.router, x)
    every = torch.matmul(x.unsqueeze(0), self.input_linear.weight.transpose(-1, -2))  # [E, tokens, hidden]
    # [k, E, tokens, 1] * [1, E, tokens, hidden], summed over E: [k, tokens, hidden]
    queries = (picks.permute(1, 2, 0).unsqueeze(-1) * every.unsqueeze(0)).sum(dim=1).transpose(0, 1)
    return queries.contiguous().view(bsz, length, self.top_k, -1), logits, (picks, gates)


def dense_jetmoe_reduce(self, layer_input: torch.Tensor, topo_info):
    """JetMoeMoA.reduce: each token's k head groups through their experts' output projections,
    weighted by the gates and summed."""
    picks, gates = topo_info
    bsz, length, k, hidden = layer_input.shape
    heads = layer_input.reshape(-1, k, hidden)
    weights = picks * gates.unsqueeze(-1)  # [tokens, k, E]
    mixed = (weights.permute(2, 0, 1).unsqueeze(-1) * heads.unsqueeze(0)).sum(dim=2)  # [E, tokens, hidden]
    out = torch.matmul(mixed, self.output_linear.weight.transpose(-1, -2)).sum(dim=0)  # [tokens, H]
    return out.view(bsz, length, -1) + self.bias


def dense_llama4_moe(self, hidden_states: torch.Tensor):
    """Llama4TextMoe.forward, the same sums with the experts' axis kept apart: transformers
    stacks the experts' rows ([E * tokens, H]) and reshapes them back, a reshape torch.export
    cannot prove for a ranged token count (a stateful package's), so it fell back to tracing."""
    x = hidden_states.reshape(-1, self.hidden_dim)
    scores, logits = self.router(x)  # [tokens, E]: sigmoid of each token's top-k scores, 0 elsewhere
    routed = x.unsqueeze(0) * scores.transpose(0, 1).unsqueeze(-1)  # [E, tokens, H]
    gate, up = torch.matmul(routed, self.experts.gate_up_proj).chunk(2, dim=-1)
    out = torch.matmul(up * self.experts.act_fn(gate), self.experts.down_proj).sum(dim=0)
    return self.shared_expert(x) + out, logits


# modules routing outside transformers' experts switch -> their methods evaluated densely
_OWN_ROUTING = {
    "JetMoeMoE": {"forward": dense_jetmoe_mlp},
    "JetMoeMoA": {"map": dense_jetmoe_map, "reduce": dense_jetmoe_reduce},
    "Llama4TextMoe": {"forward": dense_llama4_moe},
}


@contextmanager
def dense_experts(model: torch.nn.Module):
    """Within the block, `model`'s experts (if any) are evaluated densely (DENSE, and JetMoE's
    own routing modules); its own implementation is restored afterwards. Yields whether
    anything was switched."""
    own = [(m, _OWN_ROUTING[type(m).__name__]) for m in model.modules() if type(m).__name__ in _OWN_ROUTING]
    switch = has_experts(model)
    if not switch and not own:
        yield False
        return
    if switch:
        _register()
        original = model.get_experts_implementation()
        model.set_experts_implementation(DENSE)
    try:
        for module, methods in own:
            for name, method in methods.items():
                setattr(module, name, method.__get__(module))
        yield True
    finally:
        for module, methods in own:
            for name in methods:
                module.__dict__.pop(name, None)  # back to the class's method
        if switch:
            model.set_experts_implementation(original)
