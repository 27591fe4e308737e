"""Robust, parallel, sandboxed autograding on top of nbgrader (``python -m course_lib.grading``).

One command grades a whole class: collect, autograde, feedback, export, summary. Each
submission runs in a scratch folder, in a kernel forked from a pre-imported zygote and
confined by resource limits, Landlock and namespaces where the machine offers them; the
instructor's test cells are restored by grade_id; timeouts, crashes, tampering and
unreadable notebooks get a status and a fair score instead of failing the run.
See ``docs/grading.md``.
"""

from .core import STATUSES, GradingError, Options, StudentResult, format_summary, run

__all__ = ["STATUSES", "GradingError", "Options", "StudentResult", "format_summary", "run"]
