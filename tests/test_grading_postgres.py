"""The grading command against a real PostgreSQL gradebook, with concurrent writers.

Two shards of one class are graded at the same time by two processes with two workers
each (four processes writing to the gradebook at once), as several machines would. The
server is started by the test on 127.0.0.1 in a temporary data directory (as the
``postgres`` user when the tests run as root); the test is skipped, with the reason, when
the PostgreSQL server binaries are not installed (``apt-get install postgresql``).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from grading_fixtures import course as fx
from grading_fixtures.pg import PostgresUnavailable, start_postgres

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture(scope="module")
def postgres_url():
    pytest.importorskip("psycopg2", reason="psycopg2-binary is not installed")
    try:
        server = start_postgres()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server.new_database("gradebook")
    finally:
        server.stop()


STUDENTS = {"good": 5, "good2": 5, "good3": 5, "partial": 3, "partial2": 3, "os_exit": 3,
            "invalid_json": 0, "patches_traceback": 0}  # scores of fx.EXPECTED


def test_two_shards_grade_into_one_postgres_gradebook(postgres_url, tmp_path):
    root = str(tmp_path / "course")
    fx.build_course(root, db_url=postgres_url)
    subs = fx.submissions(root, spy_port=9)
    subs["good2"] = subs["good3"] = subs["good"]
    subs["partial2"] = subs["partial"]
    for student in STUDENTS:
        fx.submit(root, student, subs[student])
    cmd = [sys.executable, "-m", "course_lib.grading", fx.ASSIGNMENT, "--course-dir", root,
           "--workers", "2", "--preimport", "numpy", "--memory-mb", "512", "--quiet"]
    procs = [subprocess.Popen([*cmd, "--shard", f"{i}/2"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=fx.nbgrader_env())
             for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for proc, (_out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    listed = [line.split()[0] for out, _ in outs for line in out.splitlines()[1:-1]
              if not line.startswith("sandbox:")]
    assert sorted(listed) == sorted(STUDENTS), "each student graded by exactly one shard"

    from nbgrader.api import Gradebook

    with Gradebook(postgres_url) as gb:
        scores = {s.student.id: s.score for s in gb.find_assignment(fx.ASSIGNMENT).submissions}
    assert scores == STUDENTS
