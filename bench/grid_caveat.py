"""Benchmark: are the compression numbers measured on the suite's SmolLM2 kinder because its
weights already sit on a 4-bit grid?

The real LLM of the suite (tests/real_models.py) is SmolLM2-135M-Instruct from a Q4_1 GGUF,
dequantized to float32: every block of 32 input weights of its decoder layers holds at most 16
values, on an affine grid (min + k * step); its tied embedding/head is Q8_0 (32 levels per block
of 32, symmetric). The README's compression numbers (int4 GPTQ 1.11x perplexity (1.20x at an earlier revision), data-free int4
1.29x (1.287x re-measured on 5 December 2026 at 1560e3f; 1.48x at an earlier revision), lut6, lut4,
int8) were measured on it. No pretrained LLM in float16/bfloat16/float32 or
Q8_0 ships in a PyPI, npm or Debian package (issue 31: what was searched is in docs/compression.md),
so this bench measures the same schemes on:

- `SmolLM2 Q4_1`: the suite's model, as it is;
- `SmolLM2 off-grid`: the same weights with the grid removed: each weight moved by uniform
  noise of one grid step (-step/2..step/2, the step of its own block: (max - min) / 15 for the
  Q4_1 layers, absmax / 127 for the Q8_0 embedding), seeded. Rounding to the nearest grid point
  is what Q4_1 did to the float weights, and its error is about that uniform noise: the result is
  statistically like a float checkpoint (no two weights of a block equal, the same spread), a
  control, not the original float16 SmolLM2;
- any `--model PATH` given (a transformers text-generation folder, e.g. a float16 checkpoint on a
  machine that reaches the Hub).

Each model is converted once per scheme (text generation, iOS18, sequence length 128, validation
off), each in a fresh process, and its package judged as validation judges it
(converters/validation/quality.py: the held-out passage, against the model's own PyTorch
weights): perplexity ratio and top-1 agreement (and KL), in fp32 (`--modes fp32,fp16` for both).
"data-free" switches calibration off in that process (what a conversion below iOS18, or before
GPTQ, does). Printed: per scheme, each model's numbers, and off-grid against Q4_1.

    python bench/grid_caveat.py [--variants int8,int4-data-free,int4,lut6,lut4] [--model PATH ...]
                                [--no-off-grid] [--modes fp32] [--json out.json]

Cost: 10 conversions by default, each in its own process; on the shared 2-core machine (load
average 15-20) a data-free one took 3.5 minutes, a GPTQ one over 35.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # bench/queue.py must not shadow the standard library's queue

# name: (quantize choice, calibrated with GPTQ)
VARIANTS = {
    "int8": ("int8", False),
    "int4-data-free": ("int4", False),
    "int4": ("int4", True),
    "lut6": ("lut6", True),
    "lut4": ("lut4", True),
    "lut4-data-free": ("lut4", False),
    "mixed": ("mixed", True),
}
DEFAULT_VARIANTS = ("int8", "int4-data-free", "int4", "lut6", "lut4")
BLOCK = 32  # Q4_1 and Q8_0 store one scale per 32 consecutive input weights
SEED = 0

PIPELINE_SCRIPT = r"""
import json, logging, sys, time, warnings
warnings.filterwarnings("ignore"); logging.disable(logging.WARNING)
root, model, out, scheme, calibrated, modes = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "1", sys.argv[6].split(",")
sys.path.insert(0, root)
from pathlib import Path
import converters.export as export
from converters.backends import backend_for
from converters.capture import load
from converters.options import ConversionOptions
from converters.plan import make_plan
from converters.source import open_source
from converters.source_tokenizer import load_tokenizer
from converters.validation import quality
if not calibrated:  # data-free: the pipeline as it is, with calibration switched off
    export.calibrates = lambda plan: False
options = ConversionOptions.from_strings(quantize=scheme, minimum_deployment_target="iOS18", sequence_length="128")
started = time.perf_counter()
result = export.convert(model, "text-generation", out, options, validate=False)
converted = time.perf_counter() - started
package = result.packages[0]
entry = result.report_json["packages"][0]
# The package judged as validation judges it: the held-out passage, against the model's own weights.
plan = make_plan(open_source(model), "text-generation", options)
cfg = plan.cfg
module = cfg.reference_module(load(plan), "model").eval()
tokenizer = load_tokenizer(Path(model), cfg.attributes.vocab_size)
executor = backend_for("coreml").runner(package)
_, numbers = quality.passage_checks(cfg, "model", module, executor, tokenizer, tuple(modes), quality.bar_for(cfg), scheme, "logits")
print(json.dumps({
    "quality": numbers,
    "calibration": (entry.get("compression") or {}).get("calibration") is not None,
    "bits_per_weight": (entry.get("compression") or {}).get("bits_per_weight"),
    "convert_seconds": round(converted, 1),
    "seconds": round(time.perf_counter() - started, 1),
}))
"""


def grid_share(folder: Path) -> float:
    """Share of the blocks of 32 input weights of the 2-D layer weights (not the embedding)
    holding at most 16 distinct values: 1.0 for a Q4_1 or Q4_0 dequantized model, ~0 for a
    float checkpoint."""
    import torch
    from safetensors import safe_open

    on, total = 0, 0
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            for name in f.keys():
                if "embed" in name or not name.endswith(".weight"):
                    continue
                weight = f.get_tensor(name)
                if weight.dim() != 2 or weight.shape[-1] % BLOCK:
                    continue
                blocks = weight.float().reshape(-1, BLOCK).sort(dim=1).values
                distinct = 1 + (blocks[:, 1:] != blocks[:, :-1]).sum(dim=1)
                on += int((distinct <= 16).sum())
                total += blocks.shape[0]
    return on / total if total else float("nan")


def off_grid(source: Path, out: Path) -> Path:
    """`source` (the dequantized Q4_1 SmolLM2) with every weight of a gridded block of 32 moved
    by uniform noise of one grid step, the step of its own block: the Q4_1 layers' (max - min) /
    15, the Q8_0 embedding's absmax / 127. 1-D weights (norms, stored float32) stay as they are."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(SEED)
    tensors = {}
    with safe_open(str(source / "model.safetensors"), "pt") as f:
        metadata = f.metadata()
        for name in f.keys():
            weight = f.get_tensor(name)
            if weight.dim() == 2 and weight.shape[-1] % BLOCK == 0:
                blocks = weight.float().reshape(-1, BLOCK)
                if "embed" in name:  # Q8_0: absmax / 127 per block
                    step = blocks.abs().amax(dim=1, keepdim=True) / 127
                else:  # Q4_1: min + k * step, k = 0..15, both ends taken
                    step = (blocks.amax(dim=1, keepdim=True) - blocks.amin(dim=1, keepdim=True)) / 15
                noise = (torch.rand(blocks.shape, generator=generator) - 0.5) * step
                weight = (blocks + noise).reshape(weight.shape).to(weight.dtype)
            tensors[name] = weight.contiguous()
    out.mkdir(parents=True)
    save_file(tensors, str(out / "model.safetensors"), metadata=metadata)
    for path in source.iterdir():
        if path.is_file() and path.suffix != ".safetensors" and not path.name.startswith("."):
            shutil.copy2(path, out / path.name)
    return out


def run(model: Path, out: Path, scheme: str, calibrated: bool, modes: str) -> dict:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PIPELINE_SCRIPT, str(ROOT), str(model), str(out), scheme,
                           "1" if calibrated else "0", modes], capture_output=True, text=True,
                          env={**__import__("os").environ, "TQDM_DISABLE": "1"})
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout)[-3000:], "seconds": round(time.perf_counter() - started, 1)}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated, of {', '.join(VARIANTS)} (default: {','.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--model", type=Path, action="append", default=[],
                        help="another transformers text-generation folder to measure (repeatable)")
    parser.add_argument("--no-off-grid", action="store_true", help="skip the off-grid control")
    parser.add_argument("--modes", default="fp32", help="validation modes: fp32, fp16 or fp32,fp16")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"Unknown variant(s): {', '.join(unknown)}. Choices: {', '.join(VARIANTS)}.")

    from tests.real_models import smollm2_135m

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        suite = smollm2_135m()
        models = {"SmolLM2 Q4_1": suite}
        if not args.no_off_grid:
            models["SmolLM2 off-grid"] = off_grid(suite, tmp / "off-grid")
        for path in args.model:
            models[path.name] = path
        for label, folder in models.items():
            print(f"{label}: {folder}; blocks of 32 layer weights with <= 16 values: {grid_share(folder):.1%}", flush=True)

        results: dict[str, dict[str, dict]] = {label: {} for label in models}
        for variant in variants:
            scheme, calibrated = VARIANTS[variant]
            for label, folder in models.items():
                r = run(folder, tmp / f"{label}-{variant}".replace(" ", "_"), scheme, calibrated, args.modes)
                results[label][variant] = r
                status = "FAILED" if "error" in r else \
                    ", ".join(f"{m}: ppl {q['perplexity_ratio']:.3f}x top-1 {q['top1_agreement']:.3f}" for m, q in r["quality"].items())
                print(f"  {variant:15s} {label:18s} {r['seconds']:6.1f} s  {status}", flush=True)

    labels = list(models)
    for label in labels:
        done = [r for r in results[label].values() if "error" not in r]
        if done:
            ppl = next(iter(done[0]["quality"].values()))["perplexity_pytorch"]
            print(f"{label}: PyTorch perplexity on the passage {ppl:.2f}")
    for mode in args.modes.split(","):
        print(f"\nQuality on the held-out passage ({mode}), each package against its own model's PyTorch weights:")
        head = " | ".join(f"{label} ppl / top-1 / KL" for label in labels)
        extra = " | off-grid / Q4_1 ppl" if "SmolLM2 off-grid" in models else ""
        print(f"| scheme | {head}{extra} |")
        print("| --- " * (len(labels) + 1 + bool(extra)) + "|")
        for variant in variants:
            cells = []
            for label in labels:
                r = results[label][variant]
                q = None if "error" in r else r["quality"].get(mode)
                cells.append("failed" if q is None else
                             f"{q['perplexity_ratio']:.3f}x / {q['top1_agreement']:.1%} / {q['mean_kl_divergence']:.3f}")
            if extra:
                a, b = (results[label][variant] for label in ("SmolLM2 Q4_1", "SmolLM2 off-grid"))
                ratio = "-" if "error" in a or "error" in b else \
                    f"{b['quality'][mode]['perplexity_ratio'] / a['quality'][mode]['perplexity_ratio']:.3f}"
                cells.append(ratio)
            print(f"| {variant} | " + " | ".join(cells) + " |")
    failed = [f"{label} {v}" for label in labels for v, r in results[label].items() if "error" in r]
    for name in failed:
        label, v = name.rsplit(" ", 1)
        print(f"\n{name} failed:\n{results[label][v]['error']}")
    if args.json:
        args.json.write_text(json.dumps({"models": {k: str(v) for k, v in models.items()}, "results": results}, indent=2))
        print(f"\nResults written to {args.json}")
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
