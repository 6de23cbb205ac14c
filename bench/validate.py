"""Benchmark: the reference executor against the PyTorch forward pass on the same inputs.

Converts a randomly initialised Llama-architecture checkpoint (about 270 M parameters by
default, float16 package), then times PyTorch's forward (the baseline) and the reference
executor in fp32 and fp16-emulation modes on the same 128-token input, in this process.
Printed as ratios (executor / PyTorch); the target is under 3x.

    python bench/validate.py [--hidden 1024 --layers 16 --vocab 32000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The repo root replaces this script's folder on the path: bench/queue.py must not shadow
# the standard library's queue module.
sys.path[0] = str(ROOT)

from bench.checkpoints import add_model_arguments, build_llama  # noqa: E402


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each (after one warm-up); best counts")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")  # coremltools' progress bars

    import torch

    from converters.configs import config_class_for
    from converters.export import convert
    from converters.loading import load_hf_config, load_model
    from converters.options import ConversionOptions
    from converters.backends.coreml.executor import ReferenceExecutor
    from converters.validation.inputs import input_sets

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        parameters = build_llama(tmp / "model", args.hidden, args.layers, args.vocab)
        options = ConversionOptions.from_strings(sequence_length=args.sequence_length)
        result = convert(str(tmp / "model"), "text-generation", tmp / "out", options, validate=False)
        hf_config = load_hf_config(tmp / "model")
        cfg = config_class_for("llama")(hf_config, "text-generation", options)
        model = load_model(tmp / "model", cfg, [])
        module = cfg.wrap(model).eval()
        inputs = input_sets(cfg, "model", None)[0]
        executor = ReferenceExecutor(result.packages[0])

        def pytorch():
            with torch.inference_mode():
                module(*inputs.torch_args)

        timings = {}
        for name, fn in [
            ("pytorch", pytorch),
            ("executor fp32", lambda: executor.predict(inputs.package, mode="fp32")),
            ("executor fp16", lambda: executor.predict(inputs.package, mode="fp16")),
        ]:
            fn()  # warm-up
            timings[name] = best_of(args.repeat, fn)

    print(f"Llama-architecture model: {parameters / 1e6:.0f} M parameters, {args.sequence_length} tokens, float16 package")
    for name, seconds in timings.items():
        print(f"{name:14s} {seconds * 1000:8.1f} ms")
    for mode in ("fp32", "fp16"):
        print(f"ratio executor {mode} / pytorch: {timings[f'executor {mode}'] / timings['pytorch']:.2f} (target < 3)")


if __name__ == "__main__":
    main()
