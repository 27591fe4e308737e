"""nbgrader configuration of the course (nbgrader 0.9.6), read by every nbgrader command
run from the repository root and by ``course_lib/grading`` (docs/grading.md).

Layout (see the README's "Exercises" section and the book's Exercises chapter):

    solutions/<id>/<id>.ipynb   instructor sources: solutions + visible and hidden tests
    solutions/<id>/checks.toml  the same tests declared as data, run by the trusted grader
                                (never released: see CourseDirectory.ignore below)
    exercises/<id>/<id>.ipynb   student versions made by `nbgrader generate_assignment <id>`
                                (committed, so the book can link to them)
    submitted/ autograded/ feedback/ gradebook.db    grading working folders, not committed

Environment variables (all optional) override the defaults, so tests, CI and instructors
can grade elsewhere without editing this file:

    NBGRADER_COURSE_ROOT   course root holding the folders above (default: this folder)
    NBGRADER_DB_URL        gradebook URL (default: SQLite <course root>/gradebook.db;
                           e.g. postgresql+psycopg2://user@host/db for large courses)
    NBGRADER_EXCHANGE      exchange folder for release/fetch/submit/collect
                           (default: nbgrader's /srv/nbgrader/exchange)
    NBGRADER_CELL_TIMEOUT  seconds a single cell may run when autograding (default 60)

Remember: nbgrader runs `alembic` by name, so the venv's bin/ must be on PATH.

Grades for credit: `make grade ASSIGNMENT=<id>` (python -m course_lib.grading). Plain
`nbgrader autograde` (and the formgrader's autograde button) runs the test cells in the
student's own kernel, which the student's code controls: fine for practice, not for credit.
"""

import os

c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)

_here = os.path.dirname(os.path.abspath(__file__))
_root = os.path.abspath(os.environ.get("NBGRADER_COURSE_ROOT", _here))

# --- course layout -----------------------------------------------------------------------
c.CourseDirectory.course_id = "rl-llm-post-training"
c.CourseDirectory.root = _root
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
c.CourseDirectory.db_url = os.environ.get(
    "NBGRADER_DB_URL", "sqlite:///" + os.path.join(_root, "gradebook.db")
)
# Only notebooks are assignment material; never copy caches or checkpoints to students.
# checks.toml holds the hidden tests' inputs: it must never reach exercises/ or students.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".*",
                            "checks.toml"]

# --- exchange (release / fetch / submit / collect) ---------------------------------------
if os.environ.get("NBGRADER_EXCHANGE"):
    c.Exchange.root = os.environ["NBGRADER_EXCHANGE"]

# --- execution ---------------------------------------------------------------------------
# Every test cell of the assignments finishes in < 5 s on a 2-core laptop; a student's
# cell gets much more before it is interrupted. (A loop that ignores SIGINT still ends the
# run for that student; course_lib/grading handles it, see docs/grading.md.)
c.Execute.timeout = int(os.environ.get("NBGRADER_CELL_TIMEOUT", "60"))
c.Execute.interrupt_on_timeout = True

# --- feedback never shows hidden tests ----------------------------------------------------
# nbgrader's default feedback shows hidden tests; SanitizeFeedback (the course's one
# sanitizer, also used by course_lib.grading) keeps only "<Error>: <message>" of cells with
# hidden tests and redacts hidden lines anywhere; ClearHiddenTests then removes their source.
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import ClearHiddenTests, GetGrades  # noqa: E402

from course_lib.grading.feedback import SanitizeFeedback  # noqa: E402

c.GenerateFeedback.preprocessors = [GetGrades, CSSHTMLHeaderPreprocessor, SanitizeFeedback,
                                    ClearHiddenTests]
