"""Core AI, Apple's newer format: everything that knows an .aimodel lives here.

- backend.py — the `Backend` (convert with coreai-torch, save, describe, refuse, runners);
- bundle.py — a language model's folder as Apple's CoreAILanguageModel loads it;
- compress.py — weight compression with coreai-opt (the schemes are transforms/');
- decompositions.py — coreai-torch's decomposition table, built once a process;
- runtime.py — coreai-core's own runtime, which runs a package on this CPU for validation,
  and an engine that drives a language model's bundle as Apple's Swift runtime does;
- static_bundle.py — the iOS kind of that bundle: fixed-shape programs for the Neural Engine
  (extend_<ctx>_<q>, prompt_opt_…, gather_embeddings_…, load_embeddings), captured, converted, validated;
- static_runtime.py — Apple's StaticShapeEngine, which drives the iOS bundle, line by line.
"""

from .backend import NOT_CONVERTED, CoreAIBackend

__all__ = ["NOT_CONVERTED", "CoreAIBackend"]
