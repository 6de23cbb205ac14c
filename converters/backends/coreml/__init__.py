"""Core ML, the first output format: everything that knows an .mlpackage lives here.

- backend.py — the `Backend` (convert with coremltools, save, describe, refuse, runners);
- patches.py — coremltools' op patches, applied only while it converts;
- stitch.py — a big decoder's chunks stitched into one program with one weight file;
- compress.py — weight compression with coremltools.optimize (the schemes are transforms/');
- executor.py and ops.py — the reference executor: runs an ML Program on any OS, for validation;
- compute_units.py — where each op of a program may run (CPU, GPU, Neural Engine);
- runtime.py — real Core ML on a Mac (validation's on-device rows).
"""

from .backend import CoreMLBackend

__all__ = ["CoreMLBackend"]
