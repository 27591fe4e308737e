"""Helpers of the nbgrader round-trip tests: a temporary course, a local exchange, students.

The repository's own ``nbgrader_config.py`` is copied into a temporary course root. The
grading step is what ``make grade`` runs, ``python -m course_lib.grading <id>`` (collect
from the exchange, trusted grading, feedback, export), and ``nbgrader export`` runs as a
real command after it; generate_assignment and release_assignment run in-process through
``nbgrader.apps.NbGraderAPI`` (the same converters and exchange classes the commands and
the formgrader use, without seconds of start-up per command; the drift test in
test_assignments.py runs the ``generate_assignment`` command itself). The student side
uses nbgrader's exchange classes in-process too (what ``nbgrader fetch_assignment`` and
``nbgrader submit --student <id>`` run); one student per class goes through the real
``nbgrader submit --student`` command.

The student id in the exchange is the OS login by default; every student here runs under
the same login, so each one submits with an explicit student id
(``CourseDirectory.student_id``, the ``--student`` option of ``nbgrader submit``), and
``collect`` files the submission under that id.
"""

from __future__ import annotations

import copy
import csv
import html
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
COURSE_ID = "rl-llm-post-training"
BIN = Path(sys.executable).parent


def env_for(course: Path, exchange: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # nbgrader calls `alembic`
    env["NBGRADER_COURSE_ROOT"] = str(course)
    env["NBGRADER_EXCHANGE"] = str(exchange)
    env["NBGRADER_DB_URL"] = f"sqlite:///{course / 'gradebook.db'}"
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MPLBACKEND", "Agg")
    env.pop("JUPYTER_PLATFORM_DIRS", None)
    return env


def nbgrader(args: list[str], course: Path, env: dict[str, str], check: bool = True):
    """Run ``nbgrader <args>`` in the course root; return the CompletedProcess."""
    proc = subprocess.run(
        [str(BIN / "nbgrader"), *args], cwd=course, env=env, capture_output=True, text=True
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"nbgrader {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def make_course(tmp: Path, assignments: list[str]) -> tuple[Path, Path, dict[str, str]]:
    """A temporary course root holding copies of the sources and of nbgrader_config.py."""
    course, exchange = tmp / "course", tmp / "exchange"
    course.mkdir()
    exchange.mkdir()
    os.chmod(exchange, 0o777)
    shutil.copy(REPO / "nbgrader_config.py", course / "nbgrader_config.py")
    for a in assignments:
        shutil.copytree(REPO / "solutions" / a, course / "solutions" / a,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return course, exchange, env_for(course, exchange)


def instructor_api(course: Path, env: dict[str, str]):
    """nbgrader's Python API configured by the course's nbgrader_config.py (read with the
    course's environment variables, as the commands would)."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    keys = ("NBGRADER_COURSE_ROOT", "NBGRADER_EXCHANGE", "NBGRADER_DB_URL", "PATH")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: env[k] for k in keys})
    try:
        cfg = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg)


def api_call(result: dict, what: str) -> None:
    if not result.get("success"):
        raise AssertionError(f"{what} failed:\n{result.get('error')}\n{result.get('log')}")


def _exchange_config(exchange: Path, assignment: str, student: str, workdir: Path):
    from traitlets.config import Config

    c = Config()
    c.Exchange.root = str(exchange)
    c.Exchange.assignment_dir = str(workdir)
    c.CourseDirectory.course_id = COURSE_ID
    c.CourseDirectory.assignment_id = assignment
    c.CourseDirectory.student_id = student
    return c


def fetch(exchange: Path, assignment: str, student: str, workdir: Path) -> Path:
    """``nbgrader fetch_assignment <assignment> --course <id>`` run in ``workdir``."""
    from nbgrader.auth import Authenticator
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.exchange.default import ExchangeFetchAssignment

    c = _exchange_config(exchange, assignment, student, workdir)
    ExchangeFetchAssignment(coursedir=CourseDirectory(config=c),
                            authenticator=Authenticator(config=c), config=c).start()
    return workdir / assignment / f"{assignment}.ipynb"


def submit(exchange: Path, assignment: str, student: str, workdir: Path) -> None:
    """``nbgrader submit <assignment> --course <id> --student <student>`` in ``workdir``."""
    from nbgrader.auth import Authenticator
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.exchange.default import ExchangeSubmit

    c = _exchange_config(exchange, assignment, student, workdir)
    ExchangeSubmit(coursedir=CourseDirectory(config=c),
                   authenticator=Authenticator(config=c), config=c).start()


def submit_cli(exchange: Path, assignment: str, student: str, workdir: Path, env) -> None:
    """The same through the real command line (what students type)."""
    proc = subprocess.run(
        [str(BIN / "nbgrader"), "submit", assignment, "--course", COURSE_ID, "--student",
         student, f"--Exchange.root={exchange}"],
        cwd=workdir, env=env, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr


# --- editing a student's notebook ---------------------------------------------------------
def cell_index(nb, grade_id: str) -> int:
    for i, c in enumerate(nb.cells):
        if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            return i
    raise KeyError(grade_id)


def set_source(nb, grade_id: str, source: str) -> None:
    nb.cells[cell_index(nb, grade_id)].source = source


def delete_cell(nb, grade_id: str) -> None:
    del nb.cells[cell_index(nb, grade_id)]


def solution_source(assignment: str, grade_id: str) -> str:
    """The instructor's solution cell, markers removed (what a perfect student writes)."""
    nb = nbformat.read(REPO / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
    src = nb.cells[cell_index(nb, grade_id)].source
    keep = [ln for ln in src.splitlines() if "### BEGIN SOLUTION" not in ln
            and "### END SOLUTION" not in ln]
    return "\n".join(keep)


def hidden_lines(assignment: str) -> list[str]:
    """Every distinctive line inside the hidden-test regions of the instructor source."""
    nb = nbformat.read(REPO / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
    out, inside = [], False
    for c in nb.cells:
        for ln in c.source.splitlines():
            if "BEGIN HIDDEN TESTS" in ln:
                inside = True
            elif "END HIDDEN TESTS" in ln:
                inside = False
            elif inside and len(ln.strip()) >= 12:
                out.append(ln.strip())
    return out


# --- the whole class ----------------------------------------------------------------------
@dataclass
class ClassResult:
    course: Path
    scores: dict[str, float]
    max_score: float
    cell_scores: dict[str, dict[str, float | None]]
    feedback: dict[str, str]
    csv_rows: list[dict[str, str]]
    autograde_seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    autograde_log: str = ""


def run_class(tmp: Path, assignment: str, make_submissions) -> ClassResult:
    """Generate, release, fetch, edit (``make_submissions(released_nb) -> {student: nb}``),
    submit, collect, autograde, generate_feedback and export; return what came out."""
    t = {}
    course, exchange, env = make_course(tmp, [assignment])
    t0 = time.perf_counter()
    api = instructor_api(course, env)
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = env["PATH"]  # a new gradebook runs `alembic`
    try:
        api_call(api.generate_assignment(assignment, force=True), "generate_assignment")
    finally:
        os.environ["PATH"] = old_path
    api_call(api.release_assignment(assignment), "release_assignment")
    t["generate+release"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    students_dir = tmp / "students"
    # the submissions are edits of the released notebook (fetched once to build them)
    probe = students_dir / "_released"
    probe.mkdir(parents=True)
    released = nbformat.read(fetch(exchange, assignment, "_released", probe), as_version=4)
    subs = make_submissions(copy.deepcopy(released))
    for i, (student, nb) in enumerate(subs.items()):
        work = students_dir / student
        work.mkdir()
        path = fetch(exchange, assignment, student, work)  # each student fetches
        if nb is not None:
            if isinstance(nb, str):  # raw text: e.g. a notebook that is not valid JSON
                path.write_text(nb)
            else:
                nbformat.write(nb, path)
        if i == 0:
            submit_cli(exchange, assignment, student, work, env)
        else:
            submit(exchange, assignment, student, work)
    t["fetch+submit"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-m", "course_lib.grading", assignment,
                           "--course-dir", str(course), "--workers", "2", "--quiet"],
                          cwd=course, env=env, capture_output=True, text=True)
    autograde_s = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t["grade"] = autograde_s
    # CPU seconds of the command and its kernels: a load-independent cost per submission
    t["grade_cpu"] = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    if proc.returncode != 0:
        raise AssertionError(f"grading failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    t0 = time.perf_counter()
    nbgrader(["export", "--to", str(course / "grades.csv")], course, env)
    t["export"] = time.perf_counter() - t0

    from nbgrader.api import Gradebook

    scores, cells, max_score = {}, {}, 0.0
    with Gradebook(env["NBGRADER_DB_URL"]) as gb:
        max_score = gb.find_assignment(assignment).max_score
        for student in subs:
            try:
                sub = gb.find_submission(assignment, student)
            except Exception:  # never autograded
                scores[student] = float("nan")
                continue
            scores[student] = sub.score
            nb = sub.notebooks[0]
            cells[student] = {g.name: g.score for g in nb.grades}
    feedback = {}
    for student in subs:
        f = course / "feedback" / student / assignment / f"{assignment}.html"
        feedback[student] = html.unescape(f.read_text()) if f.exists() else ""
    with open(course / "grades.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["assignment"] == assignment]
    t["grade_returncode"] = proc.returncode
    return ClassResult(course, scores, max_score, cells, feedback, rows, autograde_s, t,
                       proc.stdout + proc.stderr)
