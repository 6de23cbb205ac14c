"""Validation of converted Core ML packages on Linux."""

from .executor import ReferenceExecutor, UnsupportedOpError

__all__ = ["ReferenceExecutor", "UnsupportedOpError"]
