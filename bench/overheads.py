"""Benchmark: the conversion's overheads that issue 25 removed, each against the previous code in
the same run, on the same model.

1. Garbage collection: a conversion's stages call gc.collect() (and coremltools' convert does);
   each walked every object the imported libraries hold. Now the imports are frozen out of
   collections first (converters/memory.py). Measured: one gc.collect() before and after.
2. Pass pipelines: coremltools validates the whole program after each of ~100 passes, prints the
   whole program into debug lines nobody reads, and its transpose pass infers every type again
   when it moved nothing; the Core ML backend validates once per pipeline, prints only when
   debug logging is on, and re-infers only after a transpose moved (backends/coreml/pass_speedups.py).
   Measured: the same conversion (validation off) with coremltools' own pipelines and ours;
   `--stateful` for the stateful package, whose symbolic shapes make type inference dear.
3. Compression: coremltools' linear_quantize_weights / palettize_weights re-ran the whole
   default pipeline after their pass; the transform now runs the cleanup passes only
   (backends/coreml/compress.py `_with_passes`). Measured: int8 and lut4 (two passes) on the same
   float16 package, both ways.
4. Capture: torch.export traced the model, then traced the whole program again to decompose it,
   recording and formatting a Python stack trace for every op; a fixed-shape program is now
   traced once, straight into the converter's decompositions, and a Core ML capture records no
   stack traces (converters/decompose.py). Measured: the part's capture both ways (`--stateful`:
   dynamic shapes, which keep two traces; there only the stack traces differ).

Model: SmolLM2-135M-Instruct (tests/real_models.py, cached after the first run), or `--random`
for a tiny random Llama. Printed as ratios current / previous (below 1 is faster).

    python bench/overheads.py [--random] [--repeat 2]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # bench/queue.py must not shadow the standard library's queue module

from bench.validate import best_of as best  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--random", action="store_true", help="a tiny random Llama instead of SmolLM2-135M")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--stateful", action="store_true", help="the stateful package (a KV cache in states)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    import coremltools as ct
    import coremltools.optimize.coreml as cto

    from converters.backends.coreml import pass_speedups  # the Core ML backend reads it from here as it converts
    from converters.export import convert
    from converters.memory import settle_imports
    from converters.options import ConversionOptions
    from converters.backends.coreml import compress
    from converters.transforms.schemes import LUT4_GROUP

    work = Path(tempfile.mkdtemp(prefix="bench-overheads-"))
    if args.random:
        from tests.models import build_model

        model = build_model("llama", work / "model")
    else:
        from tests.real_models import smollm2_135m

        model = smollm2_135m()
    rows = []

    collect = lambda: gc.collect()  # noqa: E731
    before = best(args.repeat, collect)
    settle_imports()
    rows.append(("one gc.collect()", before, best(args.repeat, collect)))

    from converters import decompose
    from converters.capture import capture, load
    from converters.plan import make_plan
    from converters.source import open_source

    capture_options = ConversionOptions.from_strings(minimum_deployment_target="iOS18",
                                                     **({"kv_cache": "stateful", "sequence_length": "128"} if args.stateful else {}))
    plan = make_plan(open_source(str(model)), "text-generation", capture_options)
    torch_model = load(plan)
    one_trace = decompose._in_one_trace

    def captured(source_lines: bool):
        return lambda: capture(plan, torch_model, plan.parts[0], source_lines=source_lines)

    def documented(*arguments):
        raise RuntimeError("the documented way: export, then run_decompositions")

    captured(False)()  # warm-up
    current = best(args.repeat, captured(False))
    decompose._in_one_trace = documented
    try:
        previous = best(args.repeat, captured(True))
    finally:
        decompose._in_one_trace = one_trace
    rows.append((f"capture{', stateful' if args.stateful else ''} (export, decompositions)", previous, current))
    del torch_model

    options = ConversionOptions.from_strings(minimum_deployment_target="iOS18",
                                             **({"kv_cache": "stateful", "sequence_length": "128"} if args.stateful else {}))
    made = []

    def conversion():
        made.append(convert(str(model), "text-generation", work / f"out{len(made)}", options, validate=False))

    conversion()  # warm-up: first-use costs (imports, torch's caches) would count against whichever runs first
    current = best(args.repeat, conversion)
    ours = pass_speedups.faster_pipelines
    pass_speedups.faster_pipelines = contextlib.nullcontext  # coremltools' own pipelines
    try:
        previous = best(args.repeat, conversion)
    finally:
        pass_speedups.faster_pipelines = ours
    rows.append((f"conversion, float16{', stateful' if args.stateful else ''} (validation off)", previous, current))

    package = ct.models.MLModel(str(made[0].packages[0]), skip_model_load=True)
    weights = compress.program_weights(compress._program(package))

    def with_coremltools_functions(mlmodel, steps):
        for name, configs in steps:
            apply = cto.linear_quantize_weights if name == compress.LINEAR_PASS else cto.palettize_weights
            mlmodel = apply(mlmodel, cto.OptimizationConfig(op_name_configs=configs))
        return mlmodel

    for scheme, run in (("int8", lambda: compress.quantize_linear(package, weights, 8)),
                        ("lut4", lambda: compress.palettize(package, weights, 4, LUT4_GROUP))):
        current = best(args.repeat, run)
        ours = compress._with_passes
        compress._with_passes = with_coremltools_functions
        try:
            previous = best(args.repeat, run)
        finally:
            compress._with_passes = ours
        rows.append((f"compression {scheme} of the float16 package", previous, current))

    print(f"\nmodel: {'tiny random Llama' if args.random else 'SmolLM2-135M-Instruct'}; best of {args.repeat}")
    print(f"{'':45} {'previous':>9} {'current':>9} {'ratio':>7}")
    for name, previous, current in rows:
        print(f"{name:45} {previous:8.3f}s {current:8.3f}s {current / previous:6.2f}x")


if __name__ == "__main__":
    main()
