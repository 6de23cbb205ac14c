"""1-D k-means for lookup tables: many tables at once, each weight counted by an importance.

Used by the calibrated tables (lut_gptq.py: weights counted by their input's mean square) and
by data-free palettization (compress.py: every weight counts the same).

Why not a library's: coremltools' data-free k-means is scikit-learn's (20+ minutes for a 135 M
LLM's tables) or the exact kmeans1d (no weights, one table per call: about 6 minutes for the
135 M LLM's 6-bit embedding tables on 2 cores); neither takes weights per value.
"""

import threading
from typing import Optional

import numpy as np
import torch

KMEANS_ITERATIONS = 30  # Lloyd's steps per split


def weighted_tables(weight: torch.Tensor, importance: torch.Tensor, bits: int, group_size: int,
                    iterations: int = KMEANS_ITERATIONS) -> torch.Tensor:
    """Per group of `group_size` rows of `weight` [rows, columns], the 2**bits-entry table (sorted)
    that k-means finds when each weight counts by its column's `importance`, all groups at once.

    Started from quantiles, Lloyd's leaves the tails without entries and stalls there (6-bit
    tables: 5x the optimal squared error on heavy-tailed weights). Splitting instead (LBG: one
    entry, the weighted mean; then each entry split in two and settled by Lloyd's, until there
    are 2**bits) stays within 1.1x of the exact k-means (kmeans1d) at 4 and 6 bits. In one
    dimension each entry's cluster is a run of the sorted weights, so a Lloyd's step is two
    lookups in running sums, not a pass over every weight."""
    rows, columns = weight.shape
    values = weight.reshape(rows // group_size, group_size * columns).float()
    zero = torch.zeros(len(values), 1, dtype=torch.float64)
    if bool((importance == importance[0]).all()):
        # Every weight counts the same (data-free): numpy's sort without the order (3x faster than
        # argsort), and one row of running counts 0, 1, 2 ... shared by all rows (not copied).
        ordered = torch.from_numpy(np.sort(values.detach().contiguous().numpy(), axis=1))
        running_counts = torch.arange(ordered.shape[1] + 1, dtype=torch.float64).expand(len(ordered), -1)
        running_sums = torch.cat([zero, ordered.double().cumsum(dim=1)], dim=1)
    else:
        counts = (importance / importance.max()).float().repeat(group_size).expand_as(values)
        ordered, order = _sorted_rows(values)
        ordered_counts = counts.gather(1, order).double()
        running_counts = torch.cat([zero, ordered_counts.cumsum(dim=1)], dim=1)
        running_sums = torch.cat([zero, (ordered.double() * ordered_counts).cumsum(dim=1)], dim=1)
    tables = (running_sums[:, -1:] / running_counts[:, -1:]).float()
    nudge = (ordered[:, -1:] - ordered[:, :1]) * 1e-3
    while tables.shape[1] < 2 ** bits:
        tables = torch.cat([tables - nudge, tables + nudge], dim=1).sort(dim=1).values
        tables = _lloyd(ordered, running_counts, running_sums, tables, iterations)
        nudge = nudge / 2
    return tables


def _sorted_rows(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row sorted, and where each sorted value came from: numpy's introsort, 2-2.5x faster
    than torch's sort here (SmolLM2-135M's rows of 576 to 24576 values). Equal values may come
    out in another order, which moves no table: a run of equal values always falls whole on one
    side of a midpoint (searchsorted finds a run's start), so only its sums are read."""
    array = values.detach().contiguous().numpy()
    order = np.argsort(array, axis=1)
    return torch.from_numpy(np.take_along_axis(array, order, axis=1)), torch.from_numpy(order)


def _lloyd(ordered: torch.Tensor, running_counts: torch.Tensor, running_sums: torch.Tensor,
           tables: torch.Tensor, iterations: int) -> torch.Tensor:
    """Lloyd's steps on sorted values: each entry moves to the weighted mean of its run.

    A row whose table stopped moving has settled for good (the same table gives the same step),
    so the steps go on with the rows still moving — gathered anew whenever half of them have
    settled (SmolLM2-135M's lut4 tables: 19 steps on average, a third of the rows still moving
    after 6) — and every row ends exactly where stepping all rows would leave it.

    The steps run as TorchScript (`_lloyd_steps`, compiled once): the same ops, without Python
    or the GIL between them — calibration fits tables on two threads side by side, and each
    waited for the other's GIL at every one of a step's ~25 small ops."""
    return _compiled_steps()(ordered, running_counts, running_sums, tables, iterations)


def _lloyd_steps(ordered: torch.Tensor, running_counts: torch.Tensor, running_sums: torch.Tensor,
                 tables: torch.Tensor, iterations: int) -> torch.Tensor:
    tables = tables.clone()
    moving: Optional[torch.Tensor] = None  # every row
    values, counts, sums_before, current = ordered, running_counts, running_sums, tables
    for _ in range(iterations):
        midpoints = ((current[:, 1:] + current[:, :-1]) / 2).contiguous()
        last = torch.full((values.size(0), 1), values.size(1), dtype=torch.long)
        edges = torch.cat([torch.zeros_like(last), torch.searchsorted(values, midpoints), last], dim=1)
        totals = counts.gather(1, edges[:, 1:]) - counts.gather(1, edges[:, :-1])
        sums = sums_before.gather(1, edges[:, 1:]) - sums_before.gather(1, edges[:, :-1])
        updated = torch.where(totals > 0, sums / totals.clamp_min(1e-300), current.double()).float().sort(dim=1)[0]
        still = (updated != current).any(dim=1)
        if moving is None:
            tables = updated
        else:
            tables[moving] = updated
        rows = still.size(0)
        settled = rows - int(still.sum())
        if settled == rows:
            break  # converged
        if 2 * settled >= rows:  # half have settled: step only the others from now on
            if moving is None:
                moving = still.nonzero().squeeze(1)
            else:
                moving = moving[still]
            assert moving is not None
            # shared running counts (every row's the same) are sliced, not gathered
            counts = running_counts[moving] if running_counts.stride(0) != 0 else running_counts[:moving.size(0)]
            values, sums_before = ordered[moving], running_sums[moving]
            current = updated[still]
        else:
            current = updated
    return tables


def _compiled_steps():
    with _compiling:
        if not _compiled:
            _compiled.append(torch.jit.script(_lloyd_steps))
    return _compiled[0]


_compiled: list = []
_compiling = threading.Lock()


def assign(values: torch.Tensor, tables: torch.Tensor, midpoints: torch.Tensor | None = None) -> torch.Tensor:
    """Each value's nearest entry in its row's sorted table (`midpoints`: the tables' `boundaries`,
    when the caller assigns to the same tables many times)."""
    return torch.searchsorted(boundaries(tables) if midpoints is None else midpoints, values.contiguous())


def boundaries(tables: torch.Tensor) -> torch.Tensor:
    """The midpoints between each row's neighbouring entries: where the nearest entry changes."""
    return ((tables[:, 1:] + tables[:, :-1]) / 2).contiguous()
