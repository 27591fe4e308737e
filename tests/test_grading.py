"""The grading command end to end on a class of adversarial submissions (issue 6).

One class is graded once per module (two workers, as CI has two cores) and shared by all
assertions; the fixture course and submissions are generated in code
(tests/grading_fixtures/course.py).
"""

from __future__ import annotations

import csv
import glob
import json
import os
import socket
import subprocess
import sys
import threading

import nbformat
import pytest
from grading_fixtures import course as fx

from course_lib.grading.restore import Unreadable, read_submission, restore

pytestmark = pytest.mark.slow


def grade(root: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "course_lib.grading", fx.ASSIGNMENT, "--course-dir", root,
           "--workers", "2", "--preimport", "numpy", "--memory-mb", "512", "--quiet", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=fx.nbgrader_env(),
                          timeout=600)


class Spy:
    """A TCP server on 127.0.0.1 that records whether any submission reached it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("course"))
    fx.build_course(root)
    spy = Spy()
    for student, content in fx.submissions(root, spy.port).items():
        fx.submit(root, student, content)
    good_before = open(os.path.join(root, "submitted", "good", "fx", "fx.ipynb"), "rb").read()
    proc = grade(root)
    spy.close()
    return {"root": root, "proc": proc, "spy": spy, "good_before": good_before}


def state(root: str, student: str) -> dict:
    with open(os.path.join(root, "autograded", ".grading", fx.ASSIGNMENT,
                           f"{student}.json")) as fh:
        return json.load(fh)


def gradebook_scores(root: str) -> dict[str, float]:
    from nbgrader.api import Gradebook

    with Gradebook("sqlite:///" + os.path.join(root, "gradebook.db")) as gb:
        return {s.student.id: s.score for s in gb.find_assignment(fx.ASSIGNMENT).submissions}


def test_command_succeeds_and_summarises_every_student(graded):
    proc = graded["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    for student in fx.EXPECTED:
        assert student in proc.stdout
    assert "totals:" in proc.stdout
    assert "sandbox: Landlock" in proc.stdout


@pytest.mark.parametrize("student", sorted(fx.EXPECTED))
def test_status_and_score(graded, student):
    status, score = fx.EXPECTED[student]
    got = state(graded["root"], student)
    assert (got["status"], got["score"], got["max_score"]) == (status, score, 6), got
    assert gradebook_scores(graded["root"])[student] == score
    if status != "graded":
        assert got["message"], "a non-graded status must explain itself to the student"


def test_feedback_for_everyone_without_hidden_tests(graded):
    root = graded["root"]
    for student in fx.EXPECTED:
        html = open(os.path.join(root, "feedback", student, "fx", "fx.html")).read()
        assert "add(-5, 5)" not in html, student
        assert "mul(-7, 6)" not in html, student
        assert "Autograder:" in html
    bad = open(os.path.join(root, "feedback", "invalid_json", "fx", "fx.html")).read()
    assert "not valid JSON" in bad


def test_sandbox_blocked_reads_writes_and_network(graded):
    root = graded["root"]
    nb = nbformat.read(os.path.join(root, "autograded", "spy", "fx", "fx.ipynb"), 4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    report = [line.split()[0] for line in text.splitlines()
              if line.split() and line.split()[0] in ("blocked", "READ", "WROTE", "CONNECTED")]
    assert report == ["blocked"] * 9, text[:2000]
    assert graded["spy"].connections == 0
    assert not os.path.exists(os.path.join(root, "autograded", "good", "fx", "evil.txt"))
    with open(os.path.join(root, "submitted", "good", "fx", "fx.ipynb"), "rb") as fh:
        assert fh.read() == graded["good_before"]
    # the kernel history never held hidden tests (print(In) in the last cell)
    assert "add(-5, 5)" not in text


def test_killed_kernels_leave_no_processes_behind(graded):
    leftovers = []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(cmdline, "rb") as fh:
                if fh.read().split(b"\0")[:2] == [b"sleep", b"4242"]:
                    leftovers.append(cmdline)
        except OSError:
            pass
    assert not leftovers, "a process started by a killed kernel survived it"


def test_memory_bomb_hits_the_limit_not_the_machine(graded):
    assert "memory limit" in state(graded["root"], "memory_bomb")["message"]


def test_huge_output_is_truncated(graded):
    root = graded["root"]
    size = os.path.getsize(os.path.join(root, "feedback", "huge_output", "fx", "fx.html"))
    assert size < 1_000_000
    assert "truncated" in state(root, "huge_output")["message"]


def test_export_has_one_row_per_student(graded):
    with open(os.path.join(graded["root"], "grades.csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["student_id"] for r in rows) == sorted(fx.EXPECTED)


def test_rerun_regrades_only_newer_submissions(graded):
    root = graded["root"]
    before = gradebook_scores(root)
    fx.submit(root, "partial", fx.correct(root), timestamp="2026-01-02 12:00:00 UTC")
    proc = grade(root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()[1:-1]
             if not line.startswith("sandbox:")}
    assert "not regraded" not in lines["partial"]
    assert all("not regraded" in lines[s] for s in fx.EXPECTED if s != "partial")
    after = gradebook_scores(root)
    assert after["partial"] == 5
    assert {s: v for s, v in after.items() if s != "partial"} == \
        {s: v for s, v in before.items() if s != "partial"}


def test_grading_that_cannot_run_exits_nonzero(graded):
    proc = subprocess.run([sys.executable, "-m", "course_lib.grading", "no_such_assignment",
                           "--course-dir", graded["root"]], capture_output=True, text=True,
                          env=fx.nbgrader_env())
    assert proc.returncode == 2
    assert "could not run" in proc.stderr


# ----------------------------------------------------------- fast unit tests (no kernel)
def _master(tmp_path):
    """The fixture's master notebook without a gradebook: the source with stubs."""
    nb = fx.source_notebook()
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution") and cell.cell_type == "code":
            cell.source = "raise NotImplementedError()"
    return nb


def test_restore_puts_back_deleted_edited_and_moved_tests(tmp_path):
    master = _master(tmp_path)
    sub = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("pass", metadata=master.cells[6].metadata),  # test_mul
        nbformat.v4.new_code_cell(fx.MUL, metadata=master.cells[5].metadata),
        nbformat.v4.new_code_cell(fx.ADD, metadata=master.cells[2].metadata),
    ])
    out, rep = restore(sub, master)
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in out.cells]
    assert ids == [None, "setup", "add", "test_add_visible", "test_add_hidden", "mul",
                   "test_mul", "written"]
    assert out.cells[6].source == master.cells[6].source  # the instructor's, hidden tests in
    assert out.cells[2].source == fx.ADD and out.cells[5].source == fx.MUL
    assert rep.tampered and "test_mul" in rep.edited
    assert {"setup", "test_add_visible", "test_add_hidden"} <= set(rep.deleted)
    assert rep.instructor_indices == {1, 3, 4, 6}


def test_restore_leaves_an_honest_submission_alone(tmp_path):
    master = _master(tmp_path)
    sub = nbformat.reads(nbformat.writes(master), as_version=4)
    for cell in sub.cells:  # what students get: hidden regions removed
        if "BEGIN HIDDEN" in cell.source:
            cell.source = cell.source.split("### BEGIN HIDDEN TESTS")[0].rstrip()
    out, rep = restore(sub, master)
    assert not rep.tampered, rep.describe()
    assert [c.source for c in out.cells] == [c.source for c in master.cells]


@pytest.mark.parametrize("content, match", [
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "not a notebook"),
    (json.dumps({"nbformat": 3, "metadata": {}, "worksheets": []}).encode(), "format is 3"),
    (json.dumps({"nbformat": 4, "nbformat_minor": 5, "cells": []}).encode(), "no metadata"),
    (json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {},
                 "cells": [{"cell_type": "code"}]}).encode(), "schema"),
])
def test_unreadable_notebooks_are_explained(tmp_path, content, match):
    path = tmp_path / "nb.json"
    path.write_bytes(content)
    with pytest.raises(Unreadable, match=match):
        read_submission(str(path), "python3", "python")


def test_a_python_kernel_under_another_name_is_accepted(tmp_path):
    nb = fx.source_notebook()
    nb.metadata["kernelspec"] = {"name": "conda-env-py", "language": "python",
                                 "display_name": "Py"}
    path = tmp_path / "nb.json"
    nbformat.write(nb, str(path))
    assert read_submission(str(path), "python3", "python").cells


def test_no_fixture_notebook_is_stored_under_tests():
    here = os.path.dirname(__file__)
    assert not glob.glob(os.path.join(here, "grading_fixtures", "**", "*.ipynb"),
                         recursive=True)


def test_collects_from_the_exchange_and_regrades_a_newer_submission(tmp_path):
    exchange = str(tmp_path / "exchange")
    os.makedirs(exchange)
    os.chmod(exchange, 0o777)
    root = fx.build_course(str(tmp_path / "course"), course_id="fxc", exchange=exchange)
    fx.nbgrader(root, "release_assignment", fx.ASSIGNMENT)
    wrong_mul = fx.answer(fx.correct(root), "mul", "def mul(a, b):\n    return 0")
    for student, nb in (("alice", wrong_mul), ("bob", fx.correct(root))):
        fx.submit_via_exchange(root, str(tmp_path / student), student, nb, "fxc", exchange)
    proc = grade(root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert gradebook_scores(root) == {"alice": 3, "bob": 5}
    fx.submit_via_exchange(root, str(tmp_path / "alice"), "alice", fx.correct(root), "fxc",
                           exchange)
    proc = grade(root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()[1:-1]
             if not line.startswith("sandbox:")}
    assert "not regraded" in lines["bob"] and "not regraded" not in lines["alice"]
    assert gradebook_scores(root) == {"alice": 5, "bob": 5}


def test_auto_preimports_cover_read_only_cells_and_the_lazy_optimiser_import():
    """``--preimport auto``: numpy, torch, torch._dynamo (the first Adam step imports it,
    about 1 s per kernel) and the top-level imports of locked cells, not of answer cells."""
    from course_lib.grading.core import preimports

    def cell(source, locked):
        c = nbformat.v4.new_code_cell(source)
        c.metadata["nbgrader"] = {"grade_id": source[:8], "locked": locked, "solution": not locked,
                                  "grade": False, "schema_version": 3}
        return c

    nb = nbformat.v4.new_notebook(cells=[
        cell("import matplotlib.pyplot as plt\nfrom course_lib.bandit import make_bandit", True),
        cell("import scipy\n", False),  # the student's answer cell: not preimported
    ])
    found = preimports(("auto", "pandas"), {"nb": nb})
    assert found == ["numpy", "torch", "torch._dynamo", "matplotlib.pyplot", "course_lib.bandit",
                     "pandas"]
