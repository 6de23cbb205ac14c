"""What a Core ML package's minimum deployment target allows (the `minimum_deployment_target`
option applies to Core ML alone): the Core ML backend's refusals, asked at plan time.

coremltools writes per-channel int8 and per-tensor lookup tables with iOS16 ops
(`constexpr_affine_dequantize`, `constexpr_lut_to_dense`), and int4, per-block and
grouped-channel ones only with iOS18 ops (`constexpr_blockwise_shift_scale`,
`constexpr_lut_to_dense` iOS18); states (a stateful KV cache) and several enumerated inputs
need iOS18 too.
"""

from __future__ import annotations

from ...configs.base import SEQ
from ...options import OPTIONS, ConversionOptions, meets
from ...transforms.schemes import IOS18, SCHEMES


def refusal(cfg, options: ConversionOptions) -> str | None:
    """Why a Core ML package for `cfg` cannot be made at `options`' deployment target, or None."""
    return compression_refusal(options) or _states_refusal(options) or _enumerated_refusal(cfg, options)


def compression_refusal(options: ConversionOptions) -> str | None:
    """A compression the deployment target cannot run, naming the target it needs."""
    scheme, target = options.quantize, options.minimum_deployment_target
    if scheme == "none":
        return None
    needs = OPTIONS["quantize"].needed_targets(scheme)
    if not meets(target, needs):
        return (f"Weight compression {scheme} needs minimum deployment target {' or '.join(needs)} "
                f"(coremltools writes {_what(scheme)} only for it); {target} is older. "
                f"Choose {'/'.join(needs)}" + (", or int8 or lut8/lut6 for older systems." if needs == IOS18 else "."))
    if SCHEMES[scheme].family == "lut" and not meets(target, IOS18) and options.group_size is not None:
        return (f"A lookup table per group of {options.group_size} channels needs minimum deployment target "
                f"iOS18 or macOS15; below it, {scheme} uses one lookup table per weight. "
                "Choose iOS18/macOS15, or leave the group size at auto.")
    return None


def _states_refusal(options: ConversionOptions) -> str | None:
    if options.kv_cache == "stateful" and not meets(options.minimum_deployment_target, IOS18):
        return "A stateful KV cache needs Core ML states: choose minimum deployment target iOS18 or macOS15."
    return None


def _enumerated_refusal(cfg, options: ConversionOptions) -> str | None:
    sequence = options.sequence_length
    if sequence.kind != "enumerated" or meets(options.minimum_deployment_target, IOS18):
        return None
    flexible_inputs = max(sum(SEQ in spec.shape for spec in cfg.inputs(part)) for part in cfg.parts())
    if flexible_inputs > 1:
        return (f"A list of sequence lengths ({sequence}) needs minimum deployment target iOS18 or macOS15 for this model, "
                "because several of its inputs have the sequence length (Core ML allows only one enumerated input before iOS 18). "
                "Choose iOS18/macOS15, one fixed length, or a range.")
    return None


def _what(scheme: str) -> str:
    return {"int4": "4-bit per-block weights", "mixed": "4-bit per-block weights"}.get(scheme, f"{scheme} weights")
