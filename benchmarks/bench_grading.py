"""Grading throughput: plain serial ``nbgrader autograde`` vs ``python -m course_lib.grading``.

Builds, for each assignment, a synthetic class from the committed sources (``solutions/``)
and student versions (``exercises/``): students cycle through correct, partially correct
and untouched submissions. Each variant grades its own fresh copy of the course, side by
side in one run, and the script prints a table of wall time, throughput and the median
seconds per submission. Usage (from the repository root, venv active)::

    python benchmarks/bench_grading.py --students 30 --workers 2 [--postgres]

Serial nbgrader's per-submission time is the interval between its post-convert hooks
(one per student); ours is each worker's time per student (grading + feedback).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def stamp(**_kwargs) -> None:
    """nbgrader post-convert hook: append the time (used for serial per-submission times)."""
    with open(os.environ["BENCH_STAMPS"], "a") as fh:
        fh.write(f"{time.time()}\n")


def _env(root: str, db_url: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["NBGRADER_COURSE_ROOT"] = root
    env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("NBGRADER_DB_URL", None)
    if db_url:
        env["NBGRADER_DB_URL"] = db_url
    return env


def _solution_code(cell) -> str:
    """The instructor's answer with the solution markers removed."""
    lines = [line for line in cell.source.split("\n")
             if "BEGIN SOLUTION" not in line and "END SOLUTION" not in line]
    return "\n".join(lines)


def make_class(root: str, assignment: str, students: int) -> None:
    """A course copy with ``students`` submissions: correct / partial / untouched."""
    import nbformat

    os.makedirs(root, exist_ok=True)
    shutil.copy(os.path.join(REPO, "nbgrader_config.py"), root)
    for folder in ("solutions", "exercises"):
        shutil.copytree(os.path.join(REPO, folder, assignment),
                        os.path.join(root, folder, assignment))
    src = nbformat.read(os.path.join(root, "solutions", assignment, f"{assignment}.ipynb"), 4)
    rel = nbformat.read(os.path.join(root, "exercises", assignment, f"{assignment}.ipynb"), 4)
    answers = {c.metadata["nbgrader"]["grade_id"]: _solution_code(c) for c in src.cells
               if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"}
    kinds = ("correct", "partial", "untouched")
    for i in range(students):
        kind = kinds[i % len(kinds)]
        nb = copy.deepcopy(rel)
        filled = 0
        for cell in nb.cells:
            gid = cell.metadata.get("nbgrader", {}).get("grade_id")
            if gid in answers and kind != "untouched":
                if kind == "partial" and filled >= max(1, len(answers) // 2):
                    continue
                cell.source = answers[gid]
                filled += 1
        folder = os.path.join(root, "submitted", f"s{i:03d}_{kind}", assignment)
        os.makedirs(folder)
        nbformat.write(nb, os.path.join(folder, f"{assignment}.ipynb"))
        with open(os.path.join(folder, "timestamp.txt"), "w") as fh:
            fh.write("2026-01-01 12:00:00 UTC")


def run_nbgrader_serial(root: str, assignment: str, db_url: str | None) -> dict:
    env = _env(root, db_url)
    subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", assignment,
                    "--force"], cwd=root, env=env, check=True, capture_output=True)
    stamps = os.path.join(root, "stamps.txt")
    env["BENCH_STAMPS"] = stamps
    start = time.time()
    with open(stamps, "w") as fh:
        fh.write(f"{start}\n")
    proc = subprocess.run([sys.executable, "-m", "nbgrader", "autograde", assignment,
                           "--Autograde.post_convert_hook=bench_grading.stamp"],
                          cwd=root, env=env, capture_output=True, text=True)
    wall = time.time() - start
    with open(stamps) as fh:
        times = [float(x) for x in fh.read().split()]
    per = [b - a for a, b in zip(times, times[1:], strict=False)][1:]  # skip app start
    return {"wall": wall, "median": statistics.median(per) if per else float("nan"),
            "rc": proc.returncode}


def run_ours(root: str, assignment: str, workers: int, db_url: str | None,
             extra: tuple[str, ...] = ()) -> dict:
    env = _env(root, db_url)
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "course_lib.grading", assignment,
                           "--course-dir", root, "--workers", str(workers), "--no-collect",
                           "--quiet", *extra], cwd=root, env=env, capture_output=True,
                          text=True)
    wall = time.time() - start
    state = os.path.join(root, "autograded", ".grading", assignment)
    per, statuses, scores = [], {}, {}
    for name in sorted(os.listdir(state)) if os.path.isdir(state) else []:
        with open(os.path.join(state, name)) as fh:
            rec = json.load(fh)
        per.append(rec["seconds"])
        statuses[rec["status"]] = statuses.get(rec["status"], 0) + 1
        scores[rec["student"]] = rec["score"]
    return {"wall": wall, "median": statistics.median(per) if per else float("nan"),
            "rc": proc.returncode, "statuses": statuses, "scores": scores,
            "stderr": proc.stderr[-2000:]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--assignments", default="ps1_advantages,ps2_clipping,ps3_bandit")
    p.add_argument("--students", type=int, default=30)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--postgres", action="store_true", help="also grade into PostgreSQL")
    p.add_argument("--keep", action="store_true", help="keep the course copies")
    a = p.parse_args()
    base = tempfile.mkdtemp(prefix="bench-grading-")
    rows = []
    pg = None
    if a.postgres:
        sys.path.insert(0, os.path.join(REPO, "tests"))
        from grading_fixtures.pg import start_postgres

        pg = start_postgres()
    try:
        for assignment in a.assignments.split(","):
            if not os.path.isdir(os.path.join(REPO, "solutions", assignment)):
                print(f"skipping {assignment}: no source notebook", file=sys.stderr)
                continue
            variants = [("nbgrader autograde (serial)", "sqlite", None, 1),
                        ("course_lib.grading", "sqlite", None, a.workers)]
            if pg is not None:
                variants.append(("course_lib.grading", "postgresql", "pg", a.workers))
            serial = None
            for i, (tool, db, use_pg, workers) in enumerate(variants):
                root = os.path.join(base, f"{assignment}-{i}")
                make_class(root, assignment, a.students)
                db_url = None
                if use_pg:
                    db_url = pg.new_database(f"{assignment.lower()}_{i}")
                if tool.startswith("nbgrader"):
                    r = run_nbgrader_serial(root, assignment, db_url)
                    serial = r
                else:
                    r = run_ours(root, assignment, workers, db_url)
                    if r["rc"] != 0:
                        print(r["stderr"], file=sys.stderr)
                speed = serial["wall"] / r["wall"] if serial else float("nan")
                rows.append((assignment, tool, db, workers, a.students, r["wall"],
                             60 * a.students / r["wall"], r["median"], speed,
                             r.get("statuses", "")))
                print(f"{assignment} {tool} {db} workers={workers}: {r['wall']:.1f} s, "
                      f"median {r['median']:.2f} s/submission, {speed:.2f}x "
                      f"{r.get('statuses', '')}", file=sys.stderr, flush=True)
    finally:
        if pg is not None:
            pg.stop()
        if not a.keep:
            shutil.rmtree(base, ignore_errors=True)
    print("| assignment | tool | gradebook | workers | submissions | wall s | "
          "submissions/min | median s/submission | speed-up vs serial nbgrader |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]:.1f} | {r[6]:.1f} | "
              f"{r[7]:.2f} | {r[8]:.2f}x |")


if __name__ == "__main__":
    main()
