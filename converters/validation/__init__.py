"""Validation, whatever the format: inputs, PyTorch's reference, comparisons, the
continuation and the quality bars of compressed packages. A package's backend supplies
the runner that executes it (backends/: Core ML's reference executor, Core AI's runtime)."""
