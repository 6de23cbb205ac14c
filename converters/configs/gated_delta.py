"""The gated delta rule of Qwen3.5's and Qwen3-Next's linear-attention layers for one call of
n tokens, with the recurrent state carried in, in tensor ops a fixed program holds.

transformers 5.23 (`models/qwen3_5/modeling_qwen3_5.py`) computes a prompt with
`torch_chunk_gated_delta_rule` (pads to chunks of 64, loops over the chunks, and inverts each
chunk's unit lower-triangular system row by row) and a cached token with
`torch_recurrent_gated_delta_rule` (one iteration of its per-token loop). Neither loop count is
known to a program whose `inputIds` has a range shape, and Core ML has no triangular solve.

`gated_delta_call` computes the same thing as one chunk as long as the call (the masked,
quadratic form of the DeltaNet papers' chunkwise algorithm: Yang et al., "Parallelizing Linear
Transformers with the Delta Rule over Sequence Length", NeurIPS 2024, §3; and "Gated Delta
Networks", ICLR 2025, §3.3), with:

- the pairwise decays exp(γ_i − γ_j) as sums over the segment j < t <= i taken directly (a
  masked cumulative sum, Mamba-2's `segsum`: Dao & Gu, "Transformers are SSMs", ICML 2024,
  `ssd_minimal.py`), not as a difference of two running sums that grow with the call: in
  float16 a running sum of −2000 keeps one unit of precision, the segment's own sum keeps its
  digits;
- (I + N)⁻¹ for the strictly lower-triangular N by recursive doubling: the inverse of the
  block-diagonal part with blocks of 1, 2, 4, … tokens, each level joining pairs of blocks by
  [[A, 0], [C, B]]⁻¹ = [[A⁻¹, 0], [−B⁻¹CA⁻¹, B⁻¹]] (the formula flash-linear-attention's
  `fla/ops/utils/solve_tril.py` merges its 16-token inverses with), the blocks chosen by masks
  of the positions, so the number of levels is set by the longest call the program admits,
  never by n (a level whose blocks already cover the call adds exactly zero). Every entry it
  holds is an entry of the true inverse; the shorter Neumann product (I − N)(I + N²)(I + N⁴)…
  holds the powers of N, which grow past float16's range (and lose float32's digits) when keys
  are alike and decays slow, though the inverse itself stays small.

Its cost is quadratic in n for the attention and 2·n³ a level for the inverse: meant for a
prompt of a chat's size and for one token (where every matrix is 1 × 1).
"""

from __future__ import annotations

import math

import torch

# The longest call the inverse is exact for unless told otherwise (12 levels).
DEFAULT_MAX_LENGTH = 4096


def inverse_levels(max_length: int) -> int:
    """How many doublings of the blocks make (I + N)⁻¹ exact for every n <= max_length."""
    return math.ceil(math.log2(max_length)) if max_length > 1 else 0


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """transformers' `l2norm` (the FLA library's): x / sqrt(sum(x²) + eps) over the last axis."""
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + eps)


def _repeat_heads(x: torch.Tensor, times: int) -> torch.Tensor:
    """`repeat_interleave(times, dim=2)` as expand + flatten (no repeat op in the program)."""
    if times == 1:
        return x
    return x.unsqueeze(3).expand(-1, -1, -1, times, -1).flatten(2, 3)


def _masks(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lower: i >= j, strict: i > j) as 0/1 float [n, n], from the call's length."""
    positions = torch.arange(g.shape[-1], device=g.device)
    lower = (positions.unsqueeze(-1) >= positions.unsqueeze(0)).to(g.dtype)
    strict = (positions.unsqueeze(-1) > positions.unsqueeze(0)).to(g.dtype)
    return lower, strict


def pairwise_decay(g: torch.Tensor, lower: torch.Tensor, strict: torch.Tensor) -> torch.Tensor:
    """[..., n] log decays -> [..., n, n]: exp(sum of g_t for j < t <= i) where i >= j, else 0.

    The segment sums are a cumulative sum of g masked to t > j (taken along the last axis, the
    one every Core ML `cumsum` takes), transposed; where i <= j the sum is empty (0), so every
    exp is finite and the mask multiplies."""
    later = g.unsqueeze(-2) * strict.transpose(0, 1)  # [..., j, t] = g_t where t > j
    segments = later.cumsum(dim=-1).transpose(-1, -2)  # [..., i, j] = sum_{j < t <= i} g_t
    return segments.exp() * lower


def unit_lower_inverse(strictly_lower: torch.Tensor, levels: int) -> torch.Tensor:
    """(I + N)⁻¹ for a strictly lower-triangular N [..., n, n], exact when 2^levels >= n.

    At level l the inverse X of the block-diagonal part (blocks of 2^l tokens) becomes that of
    blocks twice as long: X − X·(N on the pairs' joining blocks)·X."""
    positions = torch.arange(strictly_lower.shape[-1], device=strictly_lower.device)
    same = positions.unsqueeze(-1) == positions.unsqueeze(0)
    inverse = same.to(strictly_lower.dtype)  # blocks of one token: I
    for level in range(levels):
        block = torch.div(positions, 2 ** (level + 1), rounding_mode="floor")
        coarser = (block.unsqueeze(-1) == block.unsqueeze(0)).to(strictly_lower.dtype)
        joining = strictly_lower * (coarser - same.to(strictly_lower.dtype))  # C of every pair of blocks
        inverse = inverse - inverse @ joining @ inverse
        same = block.unsqueeze(-1) == block.unsqueeze(0)
    return inverse


def gated_delta_call(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    use_qk_l2norm_in_kernel: bool = True,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' gated delta rule for one call, loop-free.

    Shapes as transformers' `torch_chunk_gated_delta_rule`: query/key [B, n, key heads, key
    size], value [B, n, value heads, value size], g/beta [B, n, value heads], initial_state
    [B, value heads, key size, value size] (None: zeros). Computed in float32 as transformers
    does (its l2-normalisation when `use_qk_l2norm_in_kernel`, its 1/sqrt(key size) scale);
    returns (output [B, n, value heads, value size] in the query's dtype, the final state in
    float32). Exact for n <= max_length."""
    dtype = query.dtype
    repeats = value.shape[2] // key.shape[2]
    query, key = _repeat_heads(query, repeats), _repeat_heads(key, repeats)
    q, k, v, beta, g = (x.transpose(1, 2).to(torch.float32) for x in (query, key, value, beta, g))  # heads first
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q), l2norm(k)
    q = q * q.shape[-1] ** -0.5
    if initial_state is None:
        state = torch.zeros(k.shape[:2] + (k.shape[-1], v.shape[-1]), dtype=torch.float32, device=k.device)
    else:
        state = initial_state.to(torch.float32)

    lower, strict = _masks(g)
    decay = pairwise_decay(g, lower, strict)  # [B, H, n, n]
    from_start = g.cumsum(dim=-1).exp().unsqueeze(-1)  # exp(γ_i): the carried state's decay at i
    to_end = decay[..., -1, :].unsqueeze(-1)  # exp(γ_n − γ_j): token j's decay to the call's end

    k_beta = k * beta.unsqueeze(-1)
    # The UT system of the chunkwise algorithm: I + N, N_ij = β_i k_i·k_j exp(γ_i − γ_j), i > j.
    system = (k_beta @ k.transpose(-1, -2)) * decay * strict
    rhs = torch.cat([v * beta.unsqueeze(-1), k_beta * from_start], dim=-1)
    solved = unit_lower_inverse(system, inverse_levels(max_length)) @ rhs
    new_values, k_cumdecay = solved.split([v.shape[-1], k.shape[-1]], dim=-1)

    v_new = new_values - k_cumdecay @ state  # what the carried state does not already predict
    attention = (q @ k.transpose(-1, -2)) * decay  # causal, the diagonal included
    output = (q * from_start) @ state + attention @ v_new
    final_state = state * from_start[..., -1:, :] + (k * to_end).transpose(-1, -2) @ v_new
    return output.transpose(1, 2).to(dtype), final_state
