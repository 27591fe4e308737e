"""Build a tiny nbgrader course with one assignment (``fx``) and a class of submissions.

Generated in code so that no fixture notebook sits under tests/ with the .ipynb suffix
(pytest runs --nbval over the test paths). The assignment:

* ``setup`` (read-only): captures ``math.isclose`` before any student code runs;
* ``add`` (answer) + ``test_add_visible`` (1 point) + ``test_add_hidden`` (2 points, hidden);
* ``mul`` (answer) + ``test_mul`` (2 points, with hidden tests);
* ``written`` (markdown answer, 1 point, manually graded).

Autograded maximum 5 of 6 points. The same tests are declared for the trusted grader in
``solutions/fx/checks.toml`` (:data:`CHECKS`).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ASSIGNMENT = "fx"
HIDDEN_SECRET = "assert add(-5, 5) == 0, 'hidden: add(-5, 5) should be 0'"


def _meta(grade_id, *, grade=False, solution=False, locked=False, points=None):
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked,
            "schema_version": 3, "solution": solution}
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def source_notebook() -> nbformat.NotebookNode:
    cells = [
        new_markdown_cell("# Fixture assignment\nWrite `add` and `mul`."),
        new_code_cell("import math\n_isclose = math.isclose  # captured before student code",
                      metadata=_meta("setup", locked=True)),
        new_code_cell("def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n"
                      "    ### END SOLUTION", metadata=_meta("add", solution=True)),
        new_code_cell("assert add(1, 2) == 3, 'add(1, 2) should be 3'",
                      metadata=_meta("test_add_visible", grade=True, locked=True, points=1)),
        new_code_cell("assert add(2, 2) == 4, 'add(2, 2) should be 4'\n"
                      "### BEGIN HIDDEN TESTS\n" + HIDDEN_SECRET + "\n"
                      "assert _isclose(add(0.1, 0.2), 0.3), 'hidden: floats'\n"
                      "### END HIDDEN TESTS",
                      metadata=_meta("test_add_hidden", grade=True, locked=True, points=2)),
        new_code_cell("def mul(a, b):\n    ### BEGIN SOLUTION\n    return a * b\n"
                      "    ### END SOLUTION", metadata=_meta("mul", solution=True)),
        new_code_cell("assert mul(2, 3) == 6, 'mul(2, 3) should be 6'\n"
                      "### BEGIN HIDDEN TESTS\n"
                      "assert mul(-7, 6) == -42, 'hidden: mul(-7, 6) should be -42'\n"
                      "### END HIDDEN TESTS",
                      metadata=_meta("test_mul", grade=True, locked=True, points=2)),
        new_markdown_cell("Why is addition commutative?\n\nYOUR ANSWER HERE",
                          metadata=_meta("written", grade=True, solution=True, points=1)),
    ]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


CHECKS = """\
prelude = ""
call_timeout = 4.0

[[tests]]
grade_id = "test_add_visible"
points = 1
ok = "add OK"
checks = [{check = "check_equal", function = "add", args = ["[1, 2]", "3"]}]

[[tests]]
grade_id = "test_add_hidden"
points = 2
ok = "add: hidden OK"

[[tests.checks]]
check = "check_equal"
function = "add"
args = ["[2, 2]", "4"]

[[tests.checks]]
check = "check_equal"
function = "add"
args = ["[-5, 5]", "0"]
hidden = true

[[tests.checks]]
check = "check_equal"
function = "add"
args = ["[0.1, 0.2]", "0.3"]
kwargs = {tol = 1e-9}
hidden = true

[[tests]]
grade_id = "test_mul"
points = 2
ok = "mul OK"
checks = [{check = "check_equal", function = "mul", args = ["[2, 3]", "6"]},
          {check = "check_equal", function = "mul", args = ["[-7, 6]", "-42"], hidden = true}]
"""

CONFIG = """\
c = get_config()
c.CourseDirectory.root = {root!r}
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.db_url = {db_url!r}
c.CourseDirectory.course_id = {course_id!r}
{exchange}c.Execute.timeout = {timeout!r}
c.ClearSolutions.code_stub = {{"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}}
c.CourseDirectory.ignore = [".ipynb_checkpoints", "checks.toml"]
"""


def nbgrader_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def build_course(root: str, db_url: str | None = None, timeout: float = 4.0,
                 course_id: str = "", exchange: str | None = None) -> str:
    """Write the course and run ``nbgrader generate_assignment``; returns the root."""
    os.makedirs(os.path.join(root, "solutions", ASSIGNMENT), exist_ok=True)
    db_url = db_url or "sqlite:///" + os.path.join(root, "gradebook.db")
    with open(os.path.join(root, "nbgrader_config.py"), "w") as fh:
        # nbgrader's empty default course_id breaks PostgreSQL's foreign keys (SQLite does
        # not enforce them): name the course.
        if db_url.startswith("postgres") and not course_id:
            course_id = "fx-course"
        fh.write(CONFIG.format(root=root, db_url=db_url, timeout=timeout, course_id=course_id,
                               exchange=f"c.Exchange.root = {exchange!r}\n" if exchange else ""))
    nbformat.write(source_notebook(),
                   os.path.join(root, "solutions", ASSIGNMENT, f"{ASSIGNMENT}.ipynb"))
    with open(os.path.join(root, "solutions", ASSIGNMENT, "checks.toml"), "w") as fh:
        fh.write(CHECKS)
    proc = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment",
                           ASSIGNMENT, "--force"], cwd=root, env=nbgrader_env(),
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError("nbgrader generate_assignment failed:\n" + proc.stdout
                           + proc.stderr)
    return root


def release(root: str) -> nbformat.NotebookNode:
    return nbformat.read(os.path.join(root, "exercises", ASSIGNMENT, f"{ASSIGNMENT}.ipynb"),
                         as_version=4)


def _cell(nb, grade_id):
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            return cell
    raise KeyError(grade_id)


def answer(nb, grade_id, source):
    nb = copy.deepcopy(nb)
    _cell(nb, grade_id).source = source
    return nb


ADD = "def add(a, b):\n    return a + b"
MUL = "def mul(a, b):\n    return a * b"


def correct(root):
    return answer(answer(release(root), "add", ADD), "mul", MUL)


def submissions(root: str, spy_port: int) -> dict[str, object]:
    """Student id -> notebook (NotebookNode) or raw bytes. Expected results in EXPECTED."""
    rel = release(root)
    good = correct(root)
    subs: dict[str, object] = {}
    subs["good"] = good
    subs["partial"] = answer(good, "mul", "def mul(a, b):\n    return a + b")
    subs["untouched"] = rel
    subs["slow_but_interruptible"] = answer(good, "mul", MUL + "\nimport time\n"
                                            "time.sleep(600)")
    subs["loop_ignores_interrupt"] = answer(good, "mul", MUL + textwrap.dedent("""
        import subprocess
        subprocess.Popen(["sleep", "4242"], start_new_session=True)  # must not outlive us
        while True:
            try:
                while True:
                    pass
            except KeyboardInterrupt:
                pass"""))
    subs["memory_bomb"] = answer(good, "mul", MUL + "\n_hog = [bytearray(50 * 2**20) "
                                 "for _ in range(10_000)]")
    subs["sys_exit"] = answer(good, "add", ADD + "\nimport sys\nsys.exit(1)")
    subs["os_exit"] = answer(good, "mul", "import os\nos._exit(3)")
    subs["kills_kernel"] = answer(good, "add", "import os, signal\n"
                                  "os.kill(os.getpid(), signal.SIGKILL)")
    subs["huge_output"] = answer(good, "add", ADD + "\nprint('x' * 5_000_000)\n"
                                 "for i in range(20000):\n    print(i)")
    nb = copy.deepcopy(good)
    nb.cells = [c for c in nb.cells
                if c.metadata.get("nbgrader", {}).get("grade_id") != "test_add_hidden"]
    subs["deleted_test"] = nb
    nb = answer(answer(good, "mul", "def mul(a, b):\n    return 0"), "test_mul", "pass")
    subs["edited_test"] = nb
    nb = copy.deepcopy(good)
    tests = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    nb.cells = tests + [c for c in nb.cells if c not in tests]
    subs["reordered"] = nb
    nb = copy.deepcopy(good)
    dup = copy.deepcopy(_cell(nb, "test_add_visible"))
    dup.source = "pass  # my copy"
    nb.cells.insert(2, dup)
    nb.cells.append(copy.deepcopy(_cell(nb, "mul")))  # a copied answer cell, too
    subs["duplicated"] = nb
    nb = copy.deepcopy(good)
    for gid in ("test_add_visible", "mul"):
        cell = _cell(nb, gid)
        nb.cells[nb.cells.index(cell)] = nbformat.v4.new_markdown_cell(
            cell.source, metadata=cell.metadata)
    subs["retyped"] = nb
    subs["invalid_json"] = b'{"cells": [ this is not json'
    v3 = {"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": []}
    subs["nbformat3"] = json.dumps(v3).encode()
    raw = json.loads(nbformat.writes(good))
    del raw["metadata"]
    subs["no_metadata"] = json.dumps(raw).encode()
    nb = copy.deepcopy(good)
    nb.metadata["kernelspec"] = {"name": "ir", "display_name": "R", "language": "R"}
    nb.metadata["language_info"] = {"name": "R"}
    subs["wrong_kernel"] = nb
    subs["patches_helpers"] = answer(good, "add", textwrap.dedent("""
        import math, builtins
        math.isclose = lambda *a, **k: True
        def add(a, b):
            return 0.0 if isinstance(a, float) else a + b"""))
    subs["patches_traceback"] = answer(rel, "add", textwrap.dedent("""
        ip = get_ipython()
        ip.showtraceback = lambda *a, **k: None
        ip._showtraceback = lambda *a, **k: None"""))
    course = os.path.abspath(root)
    spy = textwrap.dedent(f"""
        import os, socket
        report = []
        for path in [{course!r} + '/solutions/fx/fx.ipynb', {course!r} + '/gradebook.db',
                     {course!r} + '/submitted/good/fx/fx.ipynb', '/proc/1/environ',
                     {course!r} + '/nbgrader_config.py']:
            try:
                with open(path, 'rb') as fh:
                    report.append(('READ', path, fh.read(200)))
            except OSError as exc:
                report.append(('blocked', path, type(exc).__name__))
        for path in [{course!r} + '/submitted/good/fx/fx.ipynb',
                     {course!r} + '/autograded/good/fx/evil.txt', '/tmp/evil_from_student']:
            try:
                with open(path, 'w') as fh:
                    fh.write('{{}}')
                report.append(('WROTE', path))
            except OSError as exc:
                report.append(('blocked', path, type(exc).__name__))
        try:
            socket.create_connection(('127.0.0.1', {spy_port}), timeout=2).close()
            report.append(('CONNECTED', {spy_port}))
        except OSError as exc:
            report.append(('blocked', 'network', type(exc).__name__))
        for r in report:
            print(*r)
        """)
    nb = answer(good, "add", ADD + "\n" + spy)
    nb.cells.append(nbformat.v4.new_code_cell(
        "import linecache\nprint(In)\nprint(list(linecache.cache))\n"
        "print([v[2] for v in linecache.cache.values() if len(v) > 2])"))
    subs["spy"] = nb
    return subs


# student -> (status, autograded score out of 6). Scores come from the trusted harness, per
# function: a cell that breaks the rule for graded code (it imports os, sys, subprocess,
# socket or builtins, or calls get_ipython) is not run, so its function scores 0, and the
# other function still counts (sys_exit, kills_kernel, patches_helpers, spy).
EXPECTED = {
    "good": ("graded", 5), "partial": ("graded", 3), "untouched": ("graded", 0),
    "loop_ignores_interrupt": ("timed out", 3), "slow_but_interruptible": ("timed out", 5),
    "memory_bomb": ("graded", 5),
    "sys_exit": ("graded", 2), "os_exit": ("crashed", 3), "kills_kernel": ("crashed", 2),
    "huge_output": ("graded", 5), "deleted_test": ("tampered", 5),
    "edited_test": ("tampered", 3), "reordered": ("tampered", 5),
    "duplicated": ("tampered", 5), "retyped": ("tampered", 5),
    "invalid_json": ("unreadable", 0), "nbformat3": ("unreadable", 0),
    "no_metadata": ("unreadable", 0), "wrong_kernel": ("unreadable", 0),
    "patches_helpers": ("graded", 2), "patches_traceback": ("graded", 0),
    "spy": ("graded", 2),
}


def submit(root: str, student: str, content, timestamp: str = "2026-01-01 12:00:00 UTC"):
    folder = os.path.join(root, "submitted", student, ASSIGNMENT)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{ASSIGNMENT}.ipynb")
    if os.path.exists(path):
        os.chmod(path, 0o644)
    if isinstance(content, bytes):
        with open(path, "wb") as fh:
            fh.write(content)
    else:
        nbformat.write(content, path)
    with open(os.path.join(folder, "timestamp.txt"), "w") as fh:
        fh.write(timestamp)


def nbgrader(root: str, *args: str, cwd: str | None = None) -> None:
    """Run an nbgrader command for the course at ``root``; raise with its log on failure."""
    proc = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=cwd or root,
                          env=nbgrader_env(), capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")


def submit_via_exchange(root: str, home: str, student: str, nb, course_id: str,
                        exchange: str) -> None:
    """What a student does: put the notebook in ~/fx/ and ``nbgrader submit`` it."""
    os.makedirs(os.path.join(home, ASSIGNMENT), exist_ok=True)
    nbformat.write(nb, os.path.join(home, ASSIGNMENT, f"{ASSIGNMENT}.ipynb"))
    nbgrader(root, "submit", ASSIGNMENT, f"--student={student}", f"--course={course_id}",
             f"--Exchange.root={exchange}", cwd=home)
