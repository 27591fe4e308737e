"""What the student sees: nbgrader's feedback minus anything that would leak hidden tests.

The one feedback sanitizer of the course: ``nbgrader_config.py`` puts it before
``ClearHiddenTests`` in ``GenerateFeedback.preprocessors`` (plain ``nbgrader
generate_feedback``), and ``python -m course_lib.grading`` uses it the same way. nbgrader
0.9.6 shows hidden tests in feedback by default, and its ``ClearHiddenTests`` only removes
the hidden region from the cell source: a traceback still quotes hidden lines.
"""

from __future__ import annotations

import re

from nbgrader.preprocessors import NbGraderPreprocessor

from .restore import hidden_lines

_REDACTED = "[hidden test line]"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class SanitizeFeedback(NbGraderPreprocessor):
    """Prepare an autograded notebook for feedback (runs before ``ClearHiddenTests``).

    * Cells with hidden tests keep only the error name and the instructor's message of a
      failure: no tracebacks (they quote the failing hidden line) and no printed output.
    * Every line of a hidden-test region that appears in any output (printed by code that
      read the kernel's history, for example) is replaced by ``[hidden test line]``.
    """

    def preprocess(self, nb, resources):
        self._lines = sorted(set(hidden_lines(nb)), key=len, reverse=True)
        return super().preprocess(nb, resources)

    def _redact(self, text: str) -> str:
        for line in self._lines:
            if line in text:
                text = text.replace(line, _REDACTED)
        return text

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code":
            return cell, resources
        if "BEGIN HIDDEN TESTS" in cell.source:
            kept = []
            for out in cell.outputs:
                if out.output_type == "error":
                    out.evalue = _ANSI.sub("", self._redact(str(out.evalue)))[:500]
                    out.traceback = [f"{out.ename}: {out.evalue}"]
                    kept.append(out)
            cell.outputs = kept
            return cell, resources
        for out in cell.outputs:
            if out.output_type == "stream":
                out.text = self._redact(out.text)
            elif out.output_type == "error":
                out.evalue = self._redact(str(out.evalue))
                out.traceback = [self._redact(t) for t in out.traceback]
            elif "data" in out:
                for mime, value in list(out.data.items()):
                    if isinstance(value, str) and mime.startswith("text/"):
                        out.data[mime] = self._redact(value)
        return cell, resources
