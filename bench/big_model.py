"""Benchmark: a 7 B-class LLM converted and validated on this machine (24 GB).

A Llama-2-7B-shaped checkpoint (random weights, bfloat16 on disk, as the Hub's 7 B models
are stored; written a layer at a time, so building it never holds the model) goes through
the whole pipeline in a fresh process: converted a chunk of layers at a time with the
weight compression asked for (int4 by default), then validated against the model streamed
layer by layer. Printed: time, the process's peak RSS against the 20 GB goal, bytes per
parameter, the package's size and the validation's verdict. A plain coremltools script
cannot be the baseline at this size (it needs about 8 bytes per parameter: bench/convert.py
measures that ratio at 1 B).

    python bench/big_model.py [--layers 32 --hidden 4096 --intermediate 11008] [--quantize int4]
                              [--checkpoint DIR (kept and reused)] [--no-validate]
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

GOAL_BYTES = 20e9
SHARD_BYTES = 2 << 30

PIPELINE_SCRIPT = r"""
import sys, json, warnings, logging
warnings.filterwarnings("ignore"); logging.disable(logging.WARNING)
sys.path.insert(0, sys.argv[1])
from converters.export import convert
from converters.options import ConversionOptions
options = ConversionOptions.from_strings(quantize=sys.argv[4], minimum_deployment_target="iOS18", sequence_length=sys.argv[5])
result = convert(sys.argv[2], "text-generation", sys.argv[3], options, validate=sys.argv[6] == "1")
report = result.report_json
print(json.dumps({
    "peak_rss_kb": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]),
    "parameters": report["architecture"]["parameters"],
    "chunks": len(report["packages"][0].get("chunks", [])),
    "size_bytes": report["packages"][0]["size_bytes"],
    "bits_per_weight": (report["packages"][0].get("compression") or {}).get("bits_per_weight"),
    "timings": report["timings"],
    "validation": report["validation"]["message"],
    "passed": report["validation"]["passed"],
    "warnings": report["warnings"],
}))
"""


def build_checkpoint(folder: Path, hidden: int, intermediate: int, layers: int, vocab: int, heads: int) -> int:
    """A Llama checkpoint in bfloat16 shards, written tensor by tensor; returns its parameter
    count. The layers are N(0, 0.02) (transformers' initialisation), the norms ones; the
    embeddings N(0, 1) and the output head the same matrix (stored twice, untied as in
    Llama-2), so the model leans to repeating its token and its next-token scores are
    decisive, as a trained model's are. With N(0, 0.02) everywhere the scores are near-ties
    that any 4-bit rounding reorders (top-1 agreement 47 % at hidden 256): validation's
    quality bar would judge the noise, not the conversion."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    folder.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads, vocab_size=vocab,
                         max_position_embeddings=4096, dtype="bfloat16", architectures=["LlamaForCausalLM"])
    config.save_pretrained(folder)
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        prefix = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[f"{prefix}self_attn.{name}.weight"] = (hidden, hidden)
        shapes[f"{prefix}mlp.gate_proj.weight"] = (intermediate, hidden)
        shapes[f"{prefix}mlp.up_proj.weight"] = (intermediate, hidden)
        shapes[f"{prefix}mlp.down_proj.weight"] = (hidden, intermediate)
        shapes[f"{prefix}input_layernorm.weight"] = (hidden,)
        shapes[f"{prefix}post_attention_layernorm.weight"] = (hidden,)
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (vocab, hidden)

    generator = torch.Generator().manual_seed(0)
    shards: list[dict] = [{}]
    size, index, total = 0, {}, 0
    embedding = (torch.randn((vocab, hidden), generator=generator)).to(torch.bfloat16)
    for name, shape in shapes.items():
        if len(shape) == 1:
            tensor = torch.ones(shape, dtype=torch.bfloat16)
        elif name in ("model.embed_tokens.weight", "lm_head.weight"):
            tensor = embedding.clone()
        else:
            tensor = (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)
        if size + tensor.numel() * 2 > SHARD_BYTES and shards[-1]:
            _write(folder, shards, len(shards), save_file, index)
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += tensor.numel() * 2
        total += tensor.numel()
    _write(folder, shards, len(shards), save_file, index)
    count = len(shards)
    renamed = {}
    for number in range(1, count + 1):  # names say the shard count, known only now
        final = f"model-{number:05d}-of-{count:05d}.safetensors"
        (folder / f"part-{number}.safetensors").rename(folder / final)
        renamed[f"part-{number}.safetensors"] = final
    weight_map = {name: renamed[file] for name, file in index.items()}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total * 2}, "weight_map": weight_map}))
    return total


def _write(folder: Path, shards: list[dict], number: int, save_file, index: dict) -> None:
    file = f"part-{number}.safetensors"
    save_file(shards[-1], str(folder / file), metadata={"format": "pt"})
    index.update({name: file for name in shards[-1]})
    shards[-1].clear()  # the shard's tensors go as soon as they are written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--intermediate", type=int, default=11008)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--quantize", default="int4")
    parser.add_argument("--sequence-length", default="128")
    parser.add_argument("--checkpoint", type=Path, help="keep the checkpoint here (reused when it exists)")
    parser.add_argument("--no-validate", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.checkpoint or Path(tmp) / "model"
        if not (folder / "config.json").exists():
            started = time.perf_counter()
            built = build_checkpoint(folder, args.hidden, args.intermediate, args.layers, args.vocab, args.heads)
            print(f"checkpoint: {built / 1e9:.2f} B parameters in bfloat16, written in {time.perf_counter() - started:.0f} s")
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", PIPELINE_SCRIPT, str(ROOT), str(folder), str(Path(tmp) / "out"),
                               args.quantize, args.sequence_length, "0" if args.no_validate else "1"],
                              capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"the pipeline failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    peak = result["peak_rss_kb"] * 1024
    print(f"{result['parameters'] / 1e9:.2f} B parameters, {args.quantize}, {result['chunks']} chunks of layers")
    print(f"time {seconds:.0f} s (process); stages: {json.dumps(result['timings'])}")
    print(f"peak RSS {peak / 1e9:.2f} GB = {peak / result['parameters']:.2f} bytes per parameter")
    print(f"ratio peak RSS / goal (20 GB): {peak / GOAL_BYTES:.2f}")
    print(f"package {result['size_bytes'] / 1e9:.2f} GB, {result['bits_per_weight']} bits per weight")
    print(f"validation: {'passed' if result['passed'] else 'FAILED' if result['passed'] is False else 'skipped'}: {result['validation']}")
    for warning in result["warnings"]:
        print(f"warning: {warning}")


if __name__ == "__main__":
    main()
