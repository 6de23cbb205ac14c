"""Core ML Converter's conversion engine: transformers models to validated Core ML packages.

Importable without Redis or Gradio. The pipeline is `converters.export.convert`; the CLI
is `python -m converters`.
"""

__version__ = "0.1.0"
