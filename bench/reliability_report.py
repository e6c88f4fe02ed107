"""The fault scenarios' figures in one table: run the scenario suite and print what it measured.

    .venv/bin/python bench/reliability_report.py              # a table on the terminal
    .venv/bin/python bench/reliability_report.py --markdown   # the table for docs/reliability.md

Runs ``tests/scenarios`` (the network test bed's fault scenarios, and the hub killed during
concurrent writes on SQLite and PostgreSQL) with pytest, collects the figures every scenario
reports (``tests/scenarios/figures.py``) and prints them beside their aims and the peers'
published figures. Needs root and network namespaces for the test bed, and the PostgreSQL test
server (``make postgres``) for the PostgreSQL half; what cannot run is reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_ENV = "EDGEFLEET_RELIABILITY_OUT"

PEERS = [
    ("k8gb", "an AP system: cannot rule out false failovers during a partition"),
    ("Karmada", "configuration lost after a long disconnect; ~8 min until failover"),
    ("OpenYurt", "pods back 49.86 s after an offline reboot (its goal: under 30 s)"),
]


def run_suite(out: Path, pytest_args: list[str]) -> int:
    """Run the scenarios with figures going to ``out``; pytest's exit code."""
    env = dict(os.environ, **{OUT_ENV: str(out)})
    env.setdefault(
        "EDGEFLEET_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:55432/edgefleet_test"
    )
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/scenarios",
        *pytest_args,
    ]
    print("running:", " ".join(command[2:]), file=sys.stderr)
    return subprocess.call(command, cwd=ROOT, env=env)


def read_figures(path: Path) -> list[dict[str, object]]:
    """The figures in a JSON-lines file, in the order they were reported."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _value(figure: dict[str, object]) -> str:
    value, unit = figure["value"], str(figure.get("unit") or "")
    text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{text} {unit}".strip() if unit and unit != "%" else f"{text}{unit}"


def _met(figure: dict[str, object]) -> str:
    met = figure.get("met")
    return "" if met is None else ("yes" if met else "NO")


def rows(figures: list[dict[str, object]]) -> list[tuple[str, str, str, str, str]]:
    """(scenario, figure, value, aim, met) per figure."""
    out = []
    for f in figures:
        scenario = str(f["scenario"]) + (f" ({f['engine']})" if f.get("engine") else "")
        out.append((scenario, str(f["name"]), _value(f), str(f.get("aim") or ""), _met(f)))
    return out


def print_table(table: list[tuple[str, str, str, str, str]], *, markdown: bool) -> None:
    header = ("scenario", "figure", "measured", "aim", "met")
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("| " + " | ".join("---" for _ in header) + " |")
        for row in table:
            print("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
        return
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    for row in [header, *table]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument(
        "--figures", type=Path, help="print the table of an earlier run's figures file instead"
    )
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args()
    if args.figures:
        code = 0
        figures = read_figures(args.figures)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "figures.jsonl"
            started = time.monotonic()
            code = run_suite(out, args.pytest_args)
            figures = read_figures(out)
            print(f"suite: exit {code} after {time.monotonic() - started:.0f} s", file=sys.stderr)
    if not figures:
        print("no figures: the scenarios did not run (see pytest's output above)")
        return code or 1
    print_table(rows(figures), markdown=args.markdown)
    print()
    print("peers, as published:")
    for name, figure in PEERS:
        print(f"  {name}: {figure}")
    return code


if __name__ == "__main__":
    sys.exit(main())
