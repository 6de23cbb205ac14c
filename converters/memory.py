"""Garbage collection that costs what it frees.

A conversion calls gc.collect() between its stages so that a model's memory goes back before the
next stage needs it (coremltools' own convert calls it too). A full collection walks every object
the process holds: with torch, transformers and coremltools imported that is about half a million
objects and 0.25-0.3 s a call, whatever the model's size — a third of a small model's conversion
time. The imported libraries' objects live as long as the process: `settle_imports` moves them to
the permanent generation that collections skip (gc.freeze), and a collection then walks only what
the work created since (the models, their graphs), which is what it is there to free.
"""

from __future__ import annotations

import gc


def settle_imports() -> None:
    """Call once the heavy libraries are imported and before the work starts; in a process that
    forks its jobs (the Linux worker), before the first fork, which also keeps those pages shared
    with the children (Python's gc.freeze documentation gives that advice for forking servers)."""
    gc.collect()
    gc.freeze()


# Below this many parameters a collection frees a few MB at most, and costs as much as a small
# model's whole stage (0.1-0.4 s a call, measured: 9 tiny conversions in one process took 111 s
# with the pipeline's collections, 75 s without). The real 135 M LLM is above it.
WORTH_COLLECTING = 20_000_000


def release(parameters: int) -> None:
    """gc.collect() between a conversion's stages, when the model is big enough for the memory
    it gives back to matter to the next stage."""
    if parameters >= WORTH_COLLECTING:
        gc.collect()
