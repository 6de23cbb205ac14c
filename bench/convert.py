"""Benchmark: the project's conversion pipeline against a plain coremltools script, and its
Core AI output (.aimodel, --format coreai) against its Core ML output for the same model.

Both convert the same randomly initialised Llama-architecture checkpoint (about 270 M
parameters by default) to a float16 ML Program, each in its own fresh process, and report
wall time and peak RSS. Printed as ratios (pipeline / plain). Validation is off here
(bench/validate.py measures it).

From about 500 M parameters the pipeline converts a chunk of layers at a time
(converters/chunks.py); at about 1 B (--hidden 2048 --layers 22) the goal is a peak RSS at
most 0.5x the plain script's, in at most 1.2x its time. --dtype bfloat16 stores the
checkpoint as the Hub's LLMs are stored (both then widen it to float32 as they load).

Core AI: the same pipeline with `format="coreai"` (coreai-torch converts, float16 through
coreai-opt's cast pass), in its own process too; printed as ratios against the pipeline's
Core ML run. A model the pipeline would convert in chunks is Core ML only (--no-coreai).

The peak is each process's own high-water mark (VmHWM): ru_maxrss would count the memory of
the process that started it (the checkpoint is built in a third process for that reason).

    python bench/convert.py [--hidden 1024 --layers 16 --vocab 32000] [--repeat 1]
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
# The repo root replaces this script's folder on the path: bench/queue.py must not shadow
# the standard library's queue module.
sys.path[0] = str(ROOT)

from bench.checkpoints import add_model_arguments  # noqa: E402

# The plain script: what a person would write with coremltools alone on this toolchain.
# It needs the same two fixes the pipeline applies (alias op, ready-made 4-D mask);
# without them nothing converts, so they are the minimum, not an advantage.
PLAIN_SCRIPT = r"""
import sys, resource, time, json, warnings, logging
warnings.filterwarnings("ignore"); logging.disable(logging.WARNING)
import numpy as np, torch, coremltools as ct
from transformers import AutoModelForCausalLM
from coremltools.converters.mil.frontend.torch import ops
from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY
_TORCH_OPS_REGISTRY.name_to_func_mapping["alias"] = ops.noop
folder, out, seq = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
class Wrapper(torch.nn.Module):
    def __init__(self, m):
        super().__init__(); self.m = m
    def forward(self, input_ids, attention_mask):
        q = input_ids.shape[1]
        mask = (1.0 - attention_mask.float())[:, None, None, :] * -1e4 + torch.triu(torch.full((q, q), -1e4), 1)
        return self.m(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
ids = torch.zeros((1, seq), dtype=torch.int32); am = torch.ones((1, seq), dtype=torch.int32)
with torch.no_grad():
    program = torch.export.export(Wrapper(model), (ids, am)).run_decompositions({})
mlmodel = ct.convert(program, inputs=[ct.TensorType(name="inputIds", shape=(1, seq), dtype=np.int32),
                                      ct.TensorType(name="attentionMask", shape=(1, seq), dtype=np.int32)],
                     outputs=[ct.TensorType(name="logits")], compute_precision=ct.precision.FLOAT16,
                     minimum_deployment_target=ct.target.iOS17, skip_model_load=True)
mlmodel.save(out)
print(json.dumps({"peak_rss_kb": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])}))
"""

PIPELINE_SCRIPT = r"""
import sys, resource, time, json, warnings, logging
warnings.filterwarnings("ignore"); logging.disable(logging.WARNING)
sys.path.insert(0, sys.argv[4])
from converters.export import convert
from converters.options import ConversionOptions
options = ConversionOptions.from_strings(sequence_length=sys.argv[3], format=sys.argv[5])
result = convert(sys.argv[1], "text-generation", sys.argv[2], options, validate=False)
print(json.dumps({"peak_rss_kb": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]),
                  "chunks": len(result.report_json["packages"][0].get("chunks", []))}))
"""

BUILD_SCRIPT = r"""
import sys, json
sys.path.insert(0, sys.argv[1])
from bench.checkpoints import build_llama
print(json.dumps({"parameters": build_llama(__import__("pathlib").Path(sys.argv[2]), *map(int, sys.argv[3:6]), sys.argv[6])}))
"""


def run(script: str, args: list[str]) -> dict:
    """Wall time of a whole fresh process (imports included, alike for both) and its peak RSS."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark process failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["seconds"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the best time and lowest peak count")
    parser.add_argument("--no-coreai", action="store_true", help="skip the Core AI run (a model converted in chunks)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        built = run(BUILD_SCRIPT, [str(ROOT), str(tmp / "model"), str(args.hidden), str(args.layers), str(args.vocab), args.dtype])
        parameters = built["parameters"]
        print(f"Llama-architecture checkpoint: {parameters / 1e6:.0f} M parameters in {args.dtype}, sequence length {args.sequence_length}")
        results: dict[str, list[dict]] = {"plain": [], "pipeline": []} | ({} if args.no_coreai else {"coreai": []})
        for i in range(args.repeat):  # alternate so machine noise hits each alike
            results["plain"].append(run(PLAIN_SCRIPT, [str(tmp / "model"), str(tmp / f"plain{i}.mlpackage"), str(args.sequence_length)]))
            results["pipeline"].append(run(PIPELINE_SCRIPT, [str(tmp / "model"), str(tmp / f"out{i}"), str(args.sequence_length), str(ROOT), "coreml"]))
            if "coreai" in results:
                results["coreai"].append(run(PIPELINE_SCRIPT, [str(tmp / "model"), str(tmp / f"ai{i}"), str(args.sequence_length), str(ROOT), "coreai"]))
        best = {k: {"seconds": min(r["seconds"] for r in v), "peak_rss_kb": min(r["peak_rss_kb"] for r in v)} for k, v in results.items()}
        for name, value in best.items():
            print(f"{name:9s} {value['seconds']:7.1f} s   peak RSS {value['peak_rss_kb'] / 1e6:5.2f} GB")
        print(f"pipeline chunks of layers: {results['pipeline'][0]['chunks'] or 'none (converted whole)'}")
        print(f"ratio time (pipeline / plain): {best['pipeline']['seconds'] / best['plain']['seconds']:.2f}")
        print(f"ratio peak RSS (pipeline / plain): {best['pipeline']['peak_rss_kb'] / best['plain']['peak_rss_kb']:.2f}")
        if "coreai" in best:
            print(f"ratio time (Core AI / Core ML, both the pipeline): {best['coreai']['seconds'] / best['pipeline']['seconds']:.2f}")
            print(f"ratio peak RSS (Core AI / Core ML, both the pipeline): {best['coreai']['peak_rss_kb'] / best['pipeline']['peak_rss_kb']:.2f}")


if __name__ == "__main__":
    main()
