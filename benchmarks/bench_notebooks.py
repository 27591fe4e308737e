"""Execution time of every chapter and solution notebook (the 60 s budget), as medians.

    python benchmarks/bench_notebooks.py [--repeat 3] [paths ...]

Executes each notebook with nbclient in a fresh kernel (working directory = its folder,
as nbval and Jupyter Book do) and prints a table of median / min / max wall seconds.
Outputs are not written back. Build the warm starts first (`make warm`) so that the first
notebook does not pay for them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 60.0


def run_once(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="*", type=Path)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    paths = a.paths or sorted(ROOT.glob("book/*.ipynb")) + sorted(ROOT.glob("solutions/*/*.ipynb"))
    print(f"| notebook | median s | min s | max s | within {BUDGET_S:.0f} s |")
    print("| --- | ---: | ---: | ---: | --- |")
    for path in paths:
        times = [run_once(path) for _ in range(a.repeat)]
        med = statistics.median(times)
        name = path.resolve().relative_to(ROOT)
        print(f"| {name} | {med:.1f} | {min(times):.1f} | {max(times):.1f} | "
              f"{'yes' if med <= BUDGET_S else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
