"""Where a package can run, judged from the program itself (no Core ML runtime needed).

These are Core ML's documented placement rules (see shared/reference/coreml-on-linux-facts.md
section 3); only a Mac's MLComputePlan says where each op really lands, and the macOS
validation adds that. Each conclusion carries its reason.
"""

from __future__ import annotations

from collections import Counter

# Ops the Neural Engine is known not to run (they fall back to the CPU, the rest of the
# model can still use the Neural Engine).
NEURAL_ENGINE_FALLBACK_OPS = {"gather", "gather_nd", "gather_along_axis", "scatter", "scatter_nd", "lstm", "gru", "rnn", "argsort", "topk", "cumsum", "classify"}
NEURAL_ENGINE_MAX_DIM = 16384  # the compiler rejects width/height above this
MAX_RANK = 5


def analyse(spec_info: dict, op_summary: list) -> dict:
    """spec_info: converters.package_info.describe_spec(...); op_summary: the executor's
    [(op type, [(output dtype, shape)])] of the program's computing ops."""
    reasons: list[str] = []
    units = {"cpu": "yes", "gpu": "yes", "neural_engine": "yes"}

    flexible = [i for i in spec_info["inputs"] if i.get("flexibility") == "range"]
    if flexible:
        # Apple (developer forums thread 724930; its stateful Llama recipe runs ranges on the GPU):
        # a range-shaped model runs on the GPU or CPU, and on the Neural Engine only when called at
        # the inputs' default shape. Enumerated shapes can each use the Neural Engine.
        units["neural_engine"] = "default_shape"
        defaults = ", ".join(f"{i['name']} {list(i.get('shape') or [])}" for i in flexible)
        reasons.append(f"inputs with range shapes run on the GPU or CPU, and on the Neural Engine only at their "
                       f"default shape ({defaults}); a list of sizes (enumerated shapes) can use it at each size")

    op_types: Counter = Counter()
    fp32_compute = 0
    fp16_compute = 0
    too_large: set[str] = set()
    max_rank = 0
    for op_type, outputs in op_summary:
        op_types[op_type] += 1
        for dtype, shape in outputs:
            if op_type != "cast" and not op_type.startswith("constexpr"):
                if dtype == "fp32":
                    fp32_compute += 1
                elif dtype == "fp16":
                    fp16_compute += 1
            max_rank = max(max_rank, len(shape))
            if len(shape) >= 2 and any(isinstance(d, int) and d > NEURAL_ENGINE_MAX_DIM for d in shape[-2:]):
                too_large.add(op_type)

    if fp32_compute and not fp16_compute:
        units["neural_engine"] = "no"
        reasons.append("the program computes in float32: Core ML never places float32 compute on the Neural Engine")
    elif fp32_compute:
        if units["neural_engine"] == "yes":
            units["neural_engine"] = "partial"
        reasons.append(f"{fp32_compute} ops compute in float32 and stay on the CPU/GPU")
    fallback = sorted(set(op_types) & NEURAL_ENGINE_FALLBACK_OPS)
    if fallback and units["neural_engine"] == "yes":
        units["neural_engine"] = "partial"
    if fallback:
        reasons.append(f"ops {', '.join(fallback)} are not run by the Neural Engine and fall back to the CPU")
    if too_large:
        if units["neural_engine"] == "yes":
            units["neural_engine"] = "partial"
        reasons.append(
            f"ops {', '.join(sorted(too_large))} have a dimension above {NEURAL_ENGINE_MAX_DIM} (e.g. a large vocabulary), "
            "which the Neural Engine compiler rejects"
        )
    if max_rank > MAX_RANK:
        units = {"cpu": "no", "gpu": "no", "neural_engine": "no"}
        reasons.append(f"a tensor has rank {max_rank}: Core ML supports rank {MAX_RANK} at most")
    return {
        "basis": "static analysis of the program (Core ML placement rules)",
        "units": units,
        "reasons": reasons,
        "op_counts": dict(op_types.most_common()),
    }
