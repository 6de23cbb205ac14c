"""Validation of converted Core ML packages on Linux."""

# The executor (coremltools, torch) loads on first use, so the check rows (compare.py) can be
# read by a process that never runs a package (the web UI reads reports through converters.report).
__all__ = ["ReferenceExecutor", "UnsupportedOpError"]


def __getattr__(name: str):
    if name in __all__:
        from . import executor

        return getattr(executor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
