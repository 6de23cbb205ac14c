"""Benchmark: calibrated 4-bit (GPTQ) in a chunked conversion against the whole-model one, on real SmolLM2-135M.

A model past ~500 M parameters converts a chunk of layers at a time (converters/chunks.py); its
GPTQ walks the chunks in order, each chunk's quantized outputs carried into the next chunk's
calibration (converters/transforms/calibrate_chunks.py). SmolLM2-135M (tests/real_models.py)
is forced into chunks (`layers_per_chunk`) so the chunked path can be judged against the whole
model's on the same real weights. Per scheme (int4, lut4 by default), each conversion in a fresh
process, then judged on the held-out passage against the original weights (validation's own
passage check, quality.py, in fp32 and fp16 emulation):

- whole: the model converted whole, GPTQ on the whole model (calibrate.py);
- chunked: the same model in chunks of `--layers-per-chunk` layers, GPTQ chunk by chunk;
- chunked data-free: the same chunks with calibration switched off in that process (what a
  chunked 4-bit conversion did before).

Printed: perplexity ratio, top-1 agreement and KL on the passage (fp32 and fp16 emulation), the
chunked/whole ratios (the bar: within 2 %), and the peak RSS of the conversion (VmHWM before the
quality check loads the reference) against the chunked data-free conversion's, measured in the
same run.

    python bench/chunked_calibration.py [--schemes int4,lut4] [--layers-per-chunk 10] [--parallel 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # bench/queue.py must not shadow the standard library's queue

from concurrent.futures import ThreadPoolExecutor, as_completed  # noqa: E402  (its threads import queue)

BOUND = 0.02  # chunked quality within 2 % of the whole-model GPTQ package's

PIPELINE_SCRIPT = r"""
import sys, json, warnings, logging
warnings.filterwarnings("ignore"); logging.disable(logging.WARNING)
sys.path.insert(0, sys.argv[1])
import converters.export as export
from converters.backends import backend_for
from converters.capture import load
from converters.options import ConversionOptions
from converters.plan import make_plan
from converters.source import open_source
from converters.source_tokenizer import load_tokenizer
from converters.validation import quality
model, out, scheme, layers_per_chunk, calibrated = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6] == "1"
if not calibrated:  # the data-free baseline: the pipeline as it is, with calibration switched off
    export.calibrates = lambda plan: False
def hwm_kb():
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
options = ConversionOptions.from_strings(quantize=scheme, minimum_deployment_target="iOS18", sequence_length="128")
result = export.convert(model, "text-generation", out, options, layers_per_chunk=layers_per_chunk, validate=False)
peak = hwm_kb()  # the conversion's peak, before the quality check loads the whole model
# Quality on the held-out passage against the original weights, as validation computes it
cfg = make_plan(open_source(model), "text-generation", options).cfg
module = cfg.reference_module(load(make_plan(open_source(model), "text-generation", options)), "model").eval()
tokenizer = load_tokenizer(model, cfg.attributes.vocab_size)
_, numbers = quality.passage_checks(cfg, "model", module, backend_for("coreml").runner(result.packages[0]), tokenizer,
                                    ("fp32", "fp16"), quality.bar_for(cfg), scheme, "logits")
package = result.report_json["packages"][0]
print(json.dumps({
    "peak_convert_kb": peak,
    "chunks": len(package.get("chunks", [])),
    "calibration": (package.get("compression") or {}).get("calibration"),
    "size_bytes": package["size_bytes"],
    "timings": result.report_json["timings"],
    "quality": numbers,
}))
"""

METRICS = ("perplexity_ratio", "top1_agreement", "mean_kl_divergence")


def run(model: Path, out: Path, scheme: str, layers_per_chunk: int, calibrated: bool) -> dict:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PIPELINE_SCRIPT, str(ROOT), str(model), str(out), scheme,
                           str(layers_per_chunk), "1" if calibrated else "0"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the pipeline failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schemes", default="int4,lut4")
    parser.add_argument("--layers-per-chunk", type=int, default=10)
    parser.add_argument("--model", type=Path, help="a transformers folder (default: real SmolLM2-135M)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--parallel", type=int, default=1, help="conversions at once (each in its own process)")
    args = parser.parse_args()
    if args.model is None:
        from tests.real_models import smollm2_135m

        args.model = smollm2_135m()
    runs = {"whole": (0, True), "chunked": (args.layers_per_chunk, True), "chunked data-free": (args.layers_per_chunk, False)}
    jobs = [(scheme, label) for scheme in args.schemes.split(",") for label in runs]
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.parallel) as pool:
        # Each conversion is its own process either way (its peak RSS is its own); --parallel only
        # overlaps them, which stretches their wall times on a busy machine.
        futures = {pool.submit(run, args.model, Path(tmp) / f"{s}-{label}", s, *runs[label]): (s, label) for s, label in jobs}
        for future in as_completed(futures):
            scheme, label = futures[future]
            r = results[(scheme, label)] = future.result()
            print(f"# {scheme} {label}: {r['chunks']} chunks, {r['seconds']} s, calibrate {r['timings'].get('calibrate')} s",
                  flush=True)
    results = {job: results[job] for job in jobs}

    print(f"\nSmolLM2-135M, sequence length 128, iOS18; chunked = {args.layers_per_chunk} layers per chunk\n")
    print("| scheme | conversion | mode | perplexity ratio | top-1 | KL | peak RSS (convert) | time |")
    print("|---|---|---|---|---|---|---|---|")
    for (scheme, label), r in results.items():
        for mode, numbers in (r["quality"] or {}).items():
            print(f"| {scheme} | {label} | {mode} | {numbers['perplexity_ratio']:.3f} | {numbers['top1_agreement']:.3f} "
                  f"| {numbers['mean_kl_divergence']:.3f} | {r['peak_convert_kb'] / 1e6:.2f} GB | {r['seconds']:.0f} s |")
    print("\nchunked GPTQ / whole GPTQ (bar: perplexity ratio and top-1 within 2 %):")
    for scheme in args.schemes.split(","):
        whole, chunked, free = (results[(scheme, label)] for label in runs)
        for mode in whole["quality"]:
            w, c = whole["quality"][mode], chunked["quality"][mode]
            ppl = c["perplexity_ratio"] / w["perplexity_ratio"]
            top1 = c["top1_agreement"] / w["top1_agreement"]
            ok = abs(ppl - 1) <= BOUND and abs(top1 - 1) <= BOUND
            print(f"  {scheme} {mode}: perplexity {ppl:.4f}x, top-1 {top1:.4f}x: {'PASS' if ok else 'FAIL'}")
        print(f"  {scheme} peak RSS while converting: chunked GPTQ / chunked data-free "
              f"{chunked['peak_convert_kb'] / free['peak_convert_kb']:.3f}, chunked GPTQ / whole GPTQ "
              f"{chunked['peak_convert_kb'] / whole['peak_convert_kb']:.3f}")
    if args.json:
        args.json.write_text(json.dumps({f"{s} {label}": r for (s, label), r in results.items()}, indent=1))


if __name__ == "__main__":
    main()
