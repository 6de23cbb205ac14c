"""Benchmark: what a user waits for — calibration, validation and Try it — against an earlier
revision of this code, in one run, on the same machine and the same packages.

The earlier revision (`--base`, by default the one issue 25 was filed against) is checked out
beside this one (`git worktree`), and every measurement runs in a fresh process of each tree:

1. Calibration (GPTQ) of SmolLM2-135M for int4, lut6 and lut4: its seconds, and the calibrated
   model's quality on the held-out evaluation passage (validation/passage.txt) against the
   original weights — perplexity ratio and top-1 agreement, PyTorch-level (GPTQ leaves the
   layers' weights on their grid in place) — so a faster calibration shows it is as good.
2. Validation of two saved packages, made once by this tree: stateful float16 and stateful
   lut4, each checked by the tree's validation command (fp32 and fp16 runs, the continuation,
   and for lut4 the quality on the passage): the command's wall time and its quality numbers.
3. Try it: 16 greedy tokens of the default (right-padded, float16) package in fp16 device
   emulation, and of the stateful one: the package's tokens per second.

Printed as a table with ratios now / base (below 1 is faster; tokens per second: above 1).
Threads: each process uses torch's default (every core), as a single worker does.

On a shared, loaded machine: `--rounds N` measures each calibration N times per tree, base and
now taking turns first (so a change of load hits both), and prints the median of the wall
seconds and of the process's CPU seconds; `--now REV` measures a revision instead of this
working tree (so the tree can change while the bench runs).

    python bench/speedups.py [--base 8b5b13d] [--now REV] [--rounds 1] [--schemes int4,lut6,lut4] [--only calibration,validation,try] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # bench/queue.py must not shadow the standard library's queue module

BASE = "8b5b13d"  # main when issue 25 was filed
SCHEMES = ("int4", "lut6", "lut4")
PROMPT = "The capital of France is"
NEW_TOKENS = 16

# One measurement in a fresh process of one tree (argv: tree, what, json arguments).
MEASURE = r"""
import json, logging, os, sys, time, types, warnings
tree, what, arguments = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.path.insert(0, tree)
warnings.filterwarnings("ignore"); logging.disable(logging.WARNING); os.environ["TQDM_DISABLE"] = "1"
import torch
from pathlib import Path
from transformers import AutoModelForCausalLM, AutoTokenizer

def passage_quality(model, reference_logits, ids):
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].double()
    target = ids[0, 1:]
    def perplexity(scores):
        return float(torch.nn.functional.cross_entropy(scores, target).exp())
    return {"perplexity_ratio": perplexity(logits) / perplexity(reference_logits),
            "top1_agreement": float((logits.argmax(-1) == reference_logits.argmax(-1)).double().mean())}

if what == "calibration":
    from converters.options import ConversionOptions
    from converters.transforms.calibrate import calibrate
    model_dir = arguments["model"]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    lines = (Path(tree) / "converters" / "validation" / "passage.txt").read_text(encoding="utf-8").splitlines()
    passage = "\n".join(line for line in lines if not line.startswith("#")).strip()
    ids = torch.tensor([tokenizer(passage)["input_ids"][:512]])
    with torch.no_grad():
        reference = model(input_ids=ids).logits[0, :-1].double()
    options = ConversionOptions.from_strings(quantize=arguments["scheme"], minimum_deployment_target="iOS18")
    plan = types.SimpleNamespace(options=options, hf_config=model.config, task="text-generation")
    start, cpu = time.perf_counter(), time.process_time()
    calibrate(plan, model, tokenizer)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, **passage_quality(model, reference, ids)}))
elif what == "try":
    from converters import try_it
    start = time.perf_counter()
    result = try_it.generate(Path(arguments["package"]), Path(arguments["model"]), arguments["prompt"], "fp16",
                             arguments["new_tokens"])
    print(json.dumps({"seconds": time.perf_counter() - start, "tokens_per_second": result["package"]["tokens_per_second"],
                      "text": result["package"]["text"], "matching_tokens": result["matching_tokens"]}))
"""


def measure(tree: Path, what: str, **arguments) -> dict:
    done = subprocess.run([sys.executable, "-c", MEASURE, str(tree), what, json.dumps(arguments)],
                          capture_output=True, text=True, cwd=tree)
    if done.returncode:
        raise RuntimeError(f"{what} in {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def validation(tree: Path, package: Path, model: Path, report: Path) -> dict:
    """The tree's validation command on a saved package: wall time and its quality numbers."""
    module = "converters.validate_package" if (tree / "converters" / "validate_package.py").exists() else "converters.validate"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", module, str(package), "--source", str(model), "--task", "text-generation",
                           "--report", str(report)], capture_output=True, text=True, cwd=tree,
                          env={**os.environ, "PYTHONPATH": str(tree), "TQDM_DISABLE": "1"})
    seconds = time.perf_counter() - start
    if not report.exists():
        raise RuntimeError(f"validation in {tree} failed:\n{done.stderr[-3000:]}")
    checked = json.loads(report.read_text())
    checked = checked.get("validation", checked)
    quality = ((checked.get("quality") or {}).get("packages") or {})
    numbers = {mode: {k: round(v, 4) for k, v in values.items() if isinstance(v, float)}
               for part in quality.values() for mode, values in part.items()}
    return {"seconds": seconds, "passed": checked.get("passed"), "quality": numbers}


def _median_run(runs: list[dict]) -> dict:
    """The median of each number over the runs (the quality is the same each run: GPTQ is deterministic)."""
    import statistics

    return {key: statistics.median(run[key] for run in runs if key in run) for key in runs[0]
            if isinstance(runs[0][key], (int, float))}


def build_packages(work: Path, model: Path) -> dict[str, Path]:
    """The packages the validation and Try it rows share, made once by this tree."""
    script = r"""
import json, logging, sys, warnings
warnings.filterwarnings("ignore"); logging.disable(logging.WARNING)
sys.path.insert(0, sys.argv[1])
from converters.export import convert
from converters.options import ConversionOptions
options = json.loads(sys.argv[4])
result = convert(sys.argv[2], "text-generation", sys.argv[3], ConversionOptions.from_strings(**options), validate=False)
print(result.packages[0])
"""
    made = {}
    for name, options in {"float16": {"minimum_deployment_target": "iOS18"},
                          "stateful float16": {"minimum_deployment_target": "iOS18", "kv_cache": "stateful"},
                          "stateful lut4": {"minimum_deployment_target": "iOS18", "kv_cache": "stateful", "quantize": "lut4"}}.items():
        done = subprocess.run([sys.executable, "-c", script, str(ROOT), str(model), str(work / name.replace(" ", "-")),
                               json.dumps(options)], capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        if done.returncode:
            raise RuntimeError(f"building the {name} package failed:\n{done.stderr[-3000:]}")
        made[name] = Path(done.stdout.strip().splitlines()[-1])
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=BASE, help=f"the revision to compare with (default {BASE})")
    parser.add_argument("--now", help="a revision to measure instead of this working tree")
    parser.add_argument("--rounds", type=int, default=1, help="calibrations per tree, turns taken (medians printed)")
    parser.add_argument("--schemes", default=",".join(SCHEMES), help="which calibrations to measure")
    parser.add_argument("--only", default="calibration,validation,try", help="which rows to measure")
    parser.add_argument("--json", type=Path, help="write the rows here too")
    args = parser.parse_args()
    only = set(args.only.split(","))

    from tests.real_models import smollm2_135m

    model = smollm2_135m()
    work = Path(tempfile.mkdtemp(prefix="bench-speedups-"))
    trees = {"base": work / "base", "now": work / "now" if args.now else ROOT}
    for name, revision in (("base", args.base), ("now", args.now)):
        if revision:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(trees[name]), revision], check=True,
                           capture_output=True)
    rows = []
    try:
        if "calibration" in only:
            for scheme in args.schemes.split(","):
                runs = {"base": [], "now": []}
                for round_ in range(args.rounds):
                    for name in (("base", "now") if round_ % 2 == 0 else ("now", "base")):
                        runs[name].append(measure(trees[name], "calibration", model=str(model), scheme=scheme))
                        print(f"calibration {scheme} {name} round {round_ + 1}: {json.dumps(runs[name][-1])}", flush=True)
                rows.append((f"calibration {scheme}, seconds", {name: _median_run(r) for name, r in runs.items()}))
        packages = build_packages(work, model) if only & {"validation", "try"} else {}
        if "validation" in only:
            for name in ("stateful float16", "stateful lut4"):
                results = {tree_name: validation(tree, packages[name], model, work / f"{tree_name}-{name}.json".replace(" ", "-"))
                           for tree_name, tree in trees.items()}
                rows.append((f"validation {name}, seconds", results))
        if "try" in only:
            for name in ("float16", "stateful float16"):
                results = {tree_name: measure(tree, "try", package=str(packages[name]), model=str(model), prompt=PROMPT,
                                              new_tokens=NEW_TOKENS) for tree_name, tree in trees.items()}
                rows.append((f"Try it {name}, tokens/s", results))
    finally:
        for name, revision in (("base", args.base), ("now", args.now)):
            if revision:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(trees[name])], capture_output=True)

    now = args.now or "this tree"
    print(f"\nSmolLM2-135M; base {args.base} against {now}; each in a fresh process, torch on every core"
          + (f"; calibration: medians of {args.rounds} runs each, turns taken" if args.rounds > 1 else "") + "\n")
    print(f"{'':36} {'base':>10} {'now':>10} {'now/base':>9}  quality (base -> now)")
    for label, results in rows:
        key = "tokens_per_second" if "tokens/s" in label else "seconds"
        before, after = results["base"][key], results["now"][key]
        quality = ""
        if "perplexity_ratio" in results["now"]:
            quality = "  ".join(f"{k} {results['base'][k]:.3f} -> {results['now'][k]:.3f}" for k in ("perplexity_ratio", "top1_agreement"))
        elif "quality" in results["now"]:
            quality = "; ".join(f"{mode}: " + ", ".join(f"{k} {results['base']['quality'].get(mode, {}).get(k)} -> {v}" for k, v in values.items())
                                for mode, values in results["now"]["quality"].items())
            quality += f"  passed {results['base']['passed']} -> {results['now']['passed']}"
        elif "matching_tokens" in results["now"]:
            quality = f"tokens matching PyTorch {results['base']['matching_tokens']} -> {results['now']['matching_tokens']}"
        print(f"{label:36} {before:10.2f} {after:10.2f} {after / before:8.2f}x  {quality}")
        if "cpu_seconds" in results["now"] and "cpu_seconds" in results["base"]:
            before, after = results["base"]["cpu_seconds"], results["now"]["cpu_seconds"]
            print(f"{'  (CPU seconds)':36} {before:10.2f} {after:10.2f} {after / before:8.2f}x")
    if args.json:
        args.json.write_text(json.dumps([{"row": label, **results} for label, results in rows], indent=1))


if __name__ == "__main__":
    main()
