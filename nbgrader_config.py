"""nbgrader configuration of the course (nbgrader 0.9.6), read by every nbgrader command
run from the repository root and by ``course_lib/grading`` (issue 6).

Layout (see the README's "Exercises" section and the book's Exercises chapter):

    solutions/<id>/<id>.ipynb   instructor sources: solutions + visible and hidden tests
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
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".*"]

# --- exchange (release / fetch / submit / collect) ---------------------------------------
if os.environ.get("NBGRADER_EXCHANGE"):
    c.Exchange.root = os.environ["NBGRADER_EXCHANGE"]

# --- execution ---------------------------------------------------------------------------
# Every test cell of the assignments finishes in < 5 s on a 2-core laptop; a student's
# cell gets much more before it is interrupted. (A loop that ignores SIGINT still ends the
# run for that student; course_lib/grading handles it, see issue 6.)
c.Execute.timeout = int(os.environ.get("NBGRADER_CELL_TIMEOUT", "60"))
c.Execute.interrupt_on_timeout = True

# --- feedback never shows hidden tests ----------------------------------------------------
# nbgrader's default feedback shows hidden tests; HideHiddenTests removes their source and
# reduces the tracebacks of those cells to "<Error>: <message>".
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import GetGrades  # noqa: E402

from course_lib.nbgrader_ext import HideHiddenTests  # noqa: E402

c.GenerateFeedback.preprocessors = [GetGrades, HideHiddenTests, CSSHTMLHeaderPreprocessor]
