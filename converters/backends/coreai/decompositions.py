"""coreai-torch's decomposition table (SDPA, RMSNorm and the like kept whole), built once a process.

`coreai_torch.get_decomp_table()` builds a new table at each call, and torch materialises it on
first use by walking every operator it knows: about 0.065 s of every Core AI conversion, which a
registry sweep of a hundred tiny models pays a hundred times. `run_decompositions` copies the table
it is given and never changes it, so one table serves every conversion.
"""

from __future__ import annotations

from functools import cache


@cache
def decomposition_table():
    import coreai_torch

    table = coreai_torch.get_decomp_table()
    table.keys()  # materialised here, once
    return table
