"""Figures the fault scenarios measure, gathered for ``bench/reliability_report.py``.

Every scenario reports what it measured with ``Figures.add`` (and asserts on it where the issue
sets a hard bound, such as "no acknowledged write lost"). When ``EDGEFLEET_RELIABILITY_OUT`` names
a file, each figure is appended to it as one JSON line, so the report can run the suite and print
the table; without it the figures are printed with the test's output only.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

OUT_ENV = "EDGEFLEET_RELIABILITY_OUT"
"""Environment variable naming the JSON-lines file that figures are appended to."""


@dataclass(frozen=True)
class Figure:
    """One measured figure of one scenario."""

    scenario: str
    """Short name of the scenario, e.g. ``hub down 60 s``."""
    name: str
    """What was measured, e.g. ``requests succeeded``."""
    value: float | int | str
    """The measurement."""
    unit: str = ""
    """Unit of ``value`` (``%``, ``s``, ``ms``, or empty for counts)."""
    aim: str = ""
    """The target it is compared with, in words (``≤ 3 s``, ``100 %``), empty if none."""
    met: bool | None = None
    """Whether the aim was met; None when there is no aim."""
    engine: str = ""
    """Database engine or other variant the figure belongs to, if any."""


class Figures:
    """Collects a test's figures and writes them where the report reads them."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self.items: list[Figure] = []

    def add(
        self,
        scenario: str,
        name: str,
        value: float | int | str,
        *,
        unit: str = "",
        aim: str = "",
        met: bool | None = None,
        engine: str = "",
    ) -> Figure:
        """Record one figure (and append it to the report file, if any)."""
        figure = Figure(scenario, name, value, unit, aim, met, engine)
        self.items.append(figure)
        print(
            f"[figure] {scenario} / {name}{f' ({engine})' if engine else ''}: {value}{unit}"
            f"{f' (aim {aim})' if aim else ''}"
        )
        if self.out is not None:
            line = json.dumps({**asdict(figure), "at": time.time()})
            with self.out.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        return figure


def from_environment() -> Figures:
    """A collector writing to ``$EDGEFLEET_RELIABILITY_OUT`` if it is set."""
    path = os.environ.get(OUT_ENV)
    return Figures(Path(path) if path else None)
