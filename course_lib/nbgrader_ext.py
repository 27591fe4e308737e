"""nbgrader extensions of this course: feedback that never reveals hidden tests.

Used by ``nbgrader_config.py`` (``GenerateFeedback.preprocessors``) and by the grading
command in ``course_lib/grading``. Explained in the book's Exercises chapter.

nbgrader 0.9.6 shows hidden tests in feedback by default, and its ``ClearHiddenTests``
preprocessor only removes the source between ``### BEGIN HIDDEN TESTS`` and ``### END
HIDDEN TESTS``: a failing hidden test still prints a traceback that quotes the hidden
lines. :class:`HideHiddenTests` does both: it removes the hidden region from the cell
source, and in every cell that had one it replaces each error's traceback by its last
line (``AssertionError: <message>``), so the student sees the test's message (written to
say what is wrong and hint why) and nothing of the hidden code.
"""

from __future__ import annotations

from nbgrader.preprocessors import ClearHiddenTests

__all__ = ["HideHiddenTests", "HIDDEN_NOTE"]

#: Shown in feedback in place of a traceback that would quote hidden tests.
HIDDEN_NOTE = "(traceback hidden: this cell contains hidden tests)"


class HideHiddenTests(ClearHiddenTests):
    """Remove hidden test code from cell sources AND from the tracebacks of those cells.

    Also strips ANSI colour codes from the kept error line. Streams and displays are left
    as they are: test cells must not print hidden inputs.
    """

    def preprocess_cell(self, cell, resources, cell_index):
        had_hidden = self.begin_test_delimeter in cell.get("source", "")
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        if had_hidden and cell.cell_type == "code":
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    ename, evalue = out.get("ename", "Error"), out.get("evalue", "")
                    out["traceback"] = [f"{ename}: {evalue}", HIDDEN_NOTE]
        return cell, resources
