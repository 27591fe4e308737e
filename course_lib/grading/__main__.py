"""``python -m course_lib.grading ASSIGNMENT``: grade a whole class (see docs/grading.md)."""

from __future__ import annotations

import argparse
import sys

from .core import GradingError, Options, format_summary, run


def _shard(text: str) -> tuple[int, int]:
    try:
        index, total = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError("expected I/N, e.g. 0/3") from None
    if not 0 <= index < total:
        raise argparse.ArgumentTypeError("shard index must be in 0..N-1")
    return index, total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m course_lib.grading",
        description="Collect, autograde (sandboxed, in parallel), generate feedback, export "
                    "grades and print a per-student summary. Exits non-zero only when grading "
                    "itself could not run.")
    p.add_argument("assignment", help="assignment id, e.g. ps1_advantages")
    p.add_argument("--course-dir", default=".", help="folder with nbgrader_config.py")
    p.add_argument("--workers", type=int, default=0, help="parallel workers (default: cores)")
    p.add_argument("--db-url", help="gradebook URL (default: the config's, SQLite)")
    p.add_argument("--timeout", type=float, help="seconds per cell (default: Execute.timeout)")
    p.add_argument("--memory-mb", type=int, default=2048, help="memory per kernel (MiB)")
    p.add_argument("--preimport", default="auto",
                   help="modules imported once per worker before forking kernels; 'auto' "
                        "(default): numpy, torch and what the read-only cells import")
    p.add_argument("--student", action="append", default=[], help="only these students")
    p.add_argument("--shard", type=_shard, default=(0, 1),
                   help="grade only shard I of N (stable hash of the student id)")
    p.add_argument("--force", action="store_true", help="regrade unchanged submissions")
    p.add_argument("--no-collect", action="store_true", help="skip nbgrader collect")
    p.add_argument("--no-feedback", action="store_true", help="skip generate_feedback")
    p.add_argument("--export", default="grades.csv", help="CSV path ('' to skip)")
    p.add_argument("--no-landlock", action="store_true", help="do not use Landlock")
    p.add_argument("--no-namespaces", action="store_true", help="do not use namespaces")
    p.add_argument("--student-files", action="store_true",
                   help="also give the kernel the non-notebook files the student submitted")
    p.add_argument("--quiet", action="store_true", help="no per-student progress lines")
    a = p.parse_args(argv)
    opts = Options(
        assignment=a.assignment, course_dir=a.course_dir, workers=a.workers,
        db_url=a.db_url, cell_timeout=a.timeout, memory_mb=a.memory_mb,
        preimport=tuple(x for x in a.preimport.split(",") if x), force=a.force,
        collect=not a.no_collect, feedback=not a.no_feedback, export=a.export or None,
        students=tuple(a.student), shard=a.shard, landlock=not a.no_landlock,
        namespaces=not a.no_namespaces, quiet=a.quiet, student_files=a.student_files)
    try:
        results = run(opts)
    except GradingError as exc:
        print(f"grading could not run: {exc}", file=sys.stderr)
        return 2
    print(format_summary(results))
    return 1 if any(r.status == "error" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
