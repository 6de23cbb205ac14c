"""Validation of converted Core ML packages on Linux."""

# The executor (coremltools, torch) loads on first use: importing a light module of this package
# (compare.py, coreai_runtime.py) does not load it.
__all__ = ["ReferenceExecutor", "UnsupportedOpError"]


def __getattr__(name: str):
    if name in __all__:
        from . import executor

        return getattr(executor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
