"""A local Hugging Face Hub for tests, spoken to by the real huggingface_hub client.

Modules: store (state: accounts, repos, commits, blobs, discussions), access (who may
do what), metadata (what the Hub derives from files, JSON shapes), api (HTTP routes),
server (LocalHub: uvicorn in a thread, seeding, inspection), faults (injected outages:
503s and timeouts), __main__ (CLI).
"""

from .server import LocalHub

__all__ = ["LocalHub"]
