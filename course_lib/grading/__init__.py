"""Robust, parallel, sandboxed autograding on top of nbgrader (``python -m course_lib.grading``).

One command grades a whole class: collect, autograde, feedback, export, summary. The grade
is computed by a trusted harness (:mod:`.harness`) that never runs student code: the
student's functions are defined in a sandboxed worker (:mod:`.worker`, no course_lib in
it) and called over a socket with inputs declared in ``solutions/<id>/checks.toml``; the
results come back as data and are compared on the grader's side (:mod:`.checks`). The rest
of the notebook runs in a sandboxed kernel forked from a pre-imported zygote, for the
feedback and the hand-graded answers. See ``docs/grading.md``.

Importing this package is light (no nbgrader): the names below load on first use.
"""

__all__ = ["STATUSES", "GradingError", "Options", "StudentResult", "format_summary", "run"]


def __getattr__(name: str):
    if name in __all__:
        from . import core

        return getattr(core, name)
    raise AttributeError(name)
