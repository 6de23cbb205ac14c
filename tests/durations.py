"""Seconds each test file takes, for the order in which the two xdist workers take them.

With `--dist loadfile` a file stays on one worker, and a worker takes the next file when it is
free: started longest first, the files end close together (the longest-processing-time rule);
started in a random order, a four-minute file picked up last ran alone at the end of the run.
tests/durations.json holds the figures (a file missing from it counts as DEFAULT_SECONDS);
refresh them from a run's JUnit report:

    .venv/bin/python -m pytest -n 2 --dist loadfile --junitxml=/tmp/run.xml
    .venv/bin/python -m tests.durations /tmp/run.xml
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

FILE = Path(__file__).with_name("durations.json")
DEFAULT_SECONDS = 20.0  # a new file: about the median of the suite's files


def expected() -> dict[str, float]:
    """{path relative to the repo root: seconds}."""
    return json.loads(FILE.read_text()) if FILE.exists() else {}


def seconds_of(path: str, table: dict[str, float]) -> float:
    return table.get(path, DEFAULT_SECONDS)


def from_junit(report: Path) -> dict[str, float]:
    """Per file: its tests' calls, setups and teardowns (JUnit's time per test case), summed."""
    totals: dict[str, float] = defaultdict(float)
    for case in ET.parse(report).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")
        # classname is "tests.test_x" or "tests.test_x.TestClass": the module is the part up to test_*
        parts = []
        for part in module:
            parts.append(part)
            if part.startswith("test_"):
                break
        totals["/".join(parts) + ".py"] += float(case.get("time") or 0)
    return {name: round(seconds, 1) for name, seconds in sorted(totals.items(), key=lambda item: -item[1])}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    table = from_junit(Path(sys.argv[1]))
    FILE.write_text(json.dumps(table, indent=1) + "\n")
    print(f"{FILE}: {len(table)} files, {sum(table.values()) / 60:.1f} minutes in all")
