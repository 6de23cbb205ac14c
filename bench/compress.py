"""Benchmark: the conversion pipeline with each weight-compression scheme against plain float16.

Runs `converters.export.convert` (text-generation, minimum deployment target iOS18, validation
off) once per scheme, each in its own fresh process, and reports wall time, peak RSS and
package size, with ratios against the float16 conversion (`none`) measured in the same run.
The memory goal: compression's peak RSS must not exceed 1.15x the float16 conversion's
(PASS/FAIL per scheme). int4 and mixed on text generation calibrate with GPTQ first
(converters/transforms/calibrate.py): that is part of their cost, and shows in the per-stage
timings (the report's load, calibrate, export_model, convert_model (compression included),
save_model; `compress` is the compression transform alone). "peak after" is the process's
peak RSS so far at the end of each stage: where it rises is the stage that set the peak.

Model: SmolLM2-135M-Instruct (tests/real_models.py, cached after the first run), `--model PATH`
for another transformers folder, or `--random` for bench/checkpoints.py's random Llama (sized by
--hidden/--layers/--vocab; it has no tokenizer, so int4 and mixed are not calibrated on it).

    python bench/compress.py [--schemes none,int8,int4,mixed,lut6,lut4] [--model PATH | --random]
                             [--sequence-length 128] [--repeat 1] [--json results.json]
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
# The repo root replaces this script's folder on the path: bench/queue.py must not shadow
# the standard library's queue module.
sys.path[0] = str(ROOT)

from bench.checkpoints import add_model_arguments, build_llama  # noqa: E402

BASELINE = "none"  # float16 weights, no compression
DEFAULT_SCHEMES = ("none", "int8", "int4", "mixed", "lut6", "lut4")
PEAK_GOAL = 1.15  # compression's peak RSS / the float16 conversion's, at most
TARGET = "iOS18"  # int4 and mixed need it; every scheme uses it so the baseline is the same program
STAGES = ("load", "calibrate", "export_model", "convert_model", "save_model")

# One conversion in a fresh process. The stage wrappers only observe (time, peak RSS so far,
# current RSS at each stage's end); the pipeline runs unchanged.
PIPELINE_SCRIPT = r"""
import sys, resource, time, json, warnings, logging
warnings.filterwarnings("ignore"); logging.disable(logging.WARNING)
sys.path.insert(0, sys.argv[5])
KB = 1 / 1024 if sys.platform == "darwin" else 1  # ru_maxrss: bytes on macOS, kB on Linux
def peak_kb():
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KB)
def rss_kb():
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None
stages = []
def observed(name, fn):
    def wrapped(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            stages.append({"stage": name, "seconds": round(time.perf_counter() - start, 3),
                           "peak_rss_kb": peak_kb(), "rss_kb": rss_kb()})
    return wrapped
import converters.export as export
import converters.backends.coreml.compress as compress
from converters.backends.coreml import CoreMLBackend
from converters.options import ConversionOptions
export.load = observed("load", export.load)
export._calibrate = observed("calibrate", export._calibrate)
export.capture = observed("export", export.capture)
CoreMLBackend.convert = observed("convert", CoreMLBackend.convert)
compress.compress_coreml = observed("compress", compress.compress_coreml)
CoreMLBackend.save = observed("save", CoreMLBackend.save)
imported_kb = peak_kb()
options = ConversionOptions.from_strings(quantize=sys.argv[4], minimum_deployment_target=sys.argv[6], sequence_length=sys.argv[3])
result = export.convert(sys.argv[1], "text-generation", sys.argv[2], options, validate=False)
report = result.report_json
print(json.dumps({
    "peak_rss_kb": peak_kb(),
    "imported_peak_rss_kb": imported_kb,
    "timings": report["timings"],
    "stages": stages,
    "size_bytes": sum(p["size_bytes"] for p in report["packages"]),
    "compression": [p.get("compression") for p in report["packages"]],
    "parameters": report["architecture"]["parameters"],
    "warnings": [w for w in report["warnings"] if not w.startswith("Validation was skipped")],
}))
"""


def run(folder: Path, out: Path, sequence_length: int, scheme: str) -> dict:
    """Wall time of a whole fresh process (imports included, alike for every scheme), its peak
    RSS, and what the report says."""
    env = {**os.environ, "TQDM_DISABLE": "1"}  # coremltools' progress bars
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", PIPELINE_SCRIPT, str(folder), str(out), str(sequence_length), scheme, str(ROOT), TARGET],
        capture_output=True, text=True, env=env,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": proc.stderr[-3000:] or proc.stdout[-3000:], "seconds": seconds}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["seconds"] = seconds
    return result


def best(runs: list[dict]) -> dict:
    """The best time and the lowest peak of a scheme's runs; the rest from the fastest run."""
    good = [r for r in runs if "error" not in r]
    if not good:
        return {"error": runs[-1]["error"]}
    fastest = min(good, key=lambda r: r["seconds"])
    return {**fastest, "seconds": fastest["seconds"], "peak_rss_kb": min(r["peak_rss_kb"] for r in good)}


def stage_timing(timings: dict, stage: str) -> float | None:
    if stage == "load":  # calibrated schemes load the model twice (again after calibration)
        return timings.get("load")
    return timings.get(stage)


def compress_seconds(result: dict) -> float | None:
    times = [s["seconds"] for s in result.get("stages", []) if s["stage"] == "compress"]
    return sum(times) if times else None


def parse_schemes(text: str) -> list[str]:
    from converters.options import QUANTIZATIONS

    schemes = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in schemes if s not in QUANTIZATIONS]
    if unknown:
        raise SystemExit(f"Unknown scheme(s): {', '.join(unknown)}. Choices: {', '.join(QUANTIZATIONS)}.")
    if BASELINE in schemes:
        schemes.remove(BASELINE)
    return [BASELINE, *dict.fromkeys(schemes)]  # the baseline first, always measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--schemes", default=",".join(DEFAULT_SCHEMES),
                        help=f"comma-separated `quantize` choices (default: {','.join(DEFAULT_SCHEMES)}); "
                             f"{BASELINE} (float16) is always run as the baseline")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", type=Path, help="a transformers folder (default: SmolLM2-135M-Instruct, tests/real_models.py)")
    source.add_argument("--random", action="store_true",
                        help="bench/checkpoints.py's random Llama, sized by --hidden/--layers/--vocab (no tokenizer: no GPTQ)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each scheme; the best time and lowest peak count")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args()
    schemes = parse_schemes(args.schemes)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.random:
            folder = tmp / "model"
            parameters = build_llama(folder, args.hidden, args.layers, args.vocab)
            label = f"random Llama-architecture checkpoint, {parameters / 1e6:.0f} M parameters"
        elif args.model:
            folder, label = args.model, str(args.model)
        else:
            from tests.real_models import smollm2_135m

            folder = smollm2_135m()
            label = f"SmolLM2-135M-Instruct ({folder})"
        print(f"{label}; sequence length {args.sequence_length}; target {TARGET}; schemes {', '.join(schemes)}", flush=True)

        runs: dict[str, list[dict]] = {s: [] for s in schemes}
        for i in range(args.repeat):  # round-robin so machine noise hits every scheme alike
            for scheme in schemes:
                result = run(folder, tmp / f"{scheme}{i}", args.sequence_length, scheme)
                runs[scheme].append(result)
                status = "failed" if "error" in result else f"{result['seconds']:.1f} s, peak {result['peak_rss_kb'] / 1e6:.2f} GB"
                print(f"  run {i + 1}/{args.repeat} {scheme}: {status}", flush=True)
        results = {s: best(r) for s, r in runs.items()}

    base = results[BASELINE]
    if "error" in base:
        raise SystemExit(f"the float16 baseline failed:\n{base['error']}")
    for result in results.values():
        if "error" in result:
            continue
        result["ratios"] = {
            "time": result["seconds"] / base["seconds"],
            "peak_rss": result["peak_rss_kb"] / base["peak_rss_kb"],
            "size": result["size_bytes"] / base["size_bytes"],
        }
        result["verdict"] = "PASS" if result["ratios"]["peak_rss"] <= PEAK_GOAL else "FAIL"

    print()
    print(f"{'scheme':7s} {'seconds':>8s} {'peak GB':>8s} {'size MB':>8s} {'bits/w':>6s}   "
          f"{'time/f16':>8s} {'peak/f16':>8s} {'size/f16':>8s}   goal (peak <= {PEAK_GOAL}x f16)")
    for scheme, r in results.items():
        if "error" in r:
            print(f"{scheme:7s} FAILED: {r['error'].strip().splitlines()[-1] if r['error'].strip() else '?'}")
            continue
        bits = next((c["bits_per_weight"] for c in r["compression"] if c), None)
        ratios = r["ratios"]
        verdict = "baseline" if scheme == BASELINE else \
            f"{r['verdict']} ({ratios['peak_rss']:.2f}x" + (f", {(ratios['peak_rss'] / PEAK_GOAL - 1) * 100:+.0f}% over the limit)" if r["verdict"] == "FAIL" else ")")
        print(f"{scheme:7s} {r['seconds']:8.1f} {r['peak_rss_kb'] / 1e6:8.2f} {r['size_bytes'] / 1e6:8.1f} "
              f"{bits if bits is not None else '-':>6}   {ratios['time']:8.2f} {ratios['peak_rss']:8.2f} {ratios['size']:8.2f}   {verdict}")

    print()
    print("Stage seconds (the report's timings; compress is inside convert_model) and peak RSS (GB) after each stage:")
    print(f"{'scheme':7s} " + " ".join(f"{s:>13s}" for s in (*STAGES, "compress")))
    for scheme, r in results.items():
        if "error" in r:
            continue
        cells = [stage_timing(r["timings"], s) for s in STAGES] + [compress_seconds(r)]
        print(f"{scheme:7s} " + " ".join(f"{c:13.1f}" if c is not None else f"{'-':>13s}" for c in cells))
    for scheme, r in results.items():
        if "error" in r:
            continue
        after = ", ".join(f"{s['stage']} {s['peak_rss_kb'] / 1e6:.2f}" for s in r["stages"])
        print(f"  {scheme:7s} peak after: imports {r['imported_peak_rss_kb'] / 1e6:.2f}, {after}")
        for warning in r["warnings"]:
            print(f"  {scheme:7s} warning: {warning}")

    failed = [s for s, r in results.items() if "error" in r]
    if args.json:
        args.json.write_text(json.dumps({
            "model": label, "sequence_length": args.sequence_length, "minimum_deployment_target": TARGET,
            "baseline": BASELINE, "peak_goal": PEAK_GOAL, "repeat": args.repeat,
            "results": results, "runs": runs,
        }, indent=2))
        print(f"\nResults written to {args.json}")
    if failed:
        raise SystemExit(f"scheme(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
