"""Read a submission safely and rebuild it around the instructor's cells.

nbgrader's own sanitizing restores an edited locked cell from the gradebook but only flags a
deleted one, breaks on changed cell types (#1941) and on copied grade_ids (#1083). Here the
graded notebook is rebuilt from the *master* (the source notebook as nbgrader saved it in the
gradebook: solutions stripped, hidden tests present) and the student's answers, matched by
``grade_id``:

* instructor cells (tests, read-only cells) always come from the master, in the master's
  order, whatever the student did to them (edited, deleted, moved, duplicated, retyped);
* each answer cell comes from the student's first cell with that grade_id, with the
  master's cell type; a missing answer cell is left out (the student's own cells may define
  the function instead), except written answers, which keep the empty stub;
* the student's other cells stay where they were relative to the preceding graded cell.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass, field

import nbformat
from nbformat import NotebookNode
from nbgrader import utils


class Unreadable(Exception):
    """The submission cannot be graded as a notebook; the message goes to the student."""


def read_submission(path: str, kernel_name: str, language: str) -> NotebookNode:
    """Parse and validate a submitted notebook or raise :class:`Unreadable`."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Unreadable(f"the file is not valid JSON ({exc}); was it saved by Jupyter?") \
            from None
    if not isinstance(data, dict):
        raise Unreadable("the file is JSON but not a notebook (no top-level object)")
    major = data.get("nbformat")
    if major != 4:
        raise Unreadable(f"the notebook format is {major!r}; this course needs nbformat 4 "
                         "(save the notebook with Jupyter 4 or later)")
    if not isinstance(data.get("metadata"), dict) or not isinstance(data.get("cells"), list):
        raise Unreadable("the notebook has no metadata or no cells")
    try:
        with warnings.catch_warnings():  # duplicate cell ids are repaired, not fatal
            warnings.simplefilter("ignore")
            nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
            nbformat.validate(nb)
    except Exception as exc:  # nbformat raises ValidationError and friends
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Unreadable(f"the notebook does not follow the nbformat 4 schema: {first}") \
            from None
    spec = nb.metadata.get("kernelspec", {})
    lang = (spec.get("language") or nb.metadata.get("language_info", {}).get("name") or "")
    name = spec.get("name", "")
    if name != kernel_name and lang.lower() != language.lower():
        raise Unreadable(
            f"the notebook was written for the kernel {name or '(none)'!r} "
            f"(language {lang or 'unknown'!r}); this assignment needs {kernel_name!r} "
            f"({language})")
    return nb


def _grade_id(cell: NotebookNode) -> str | None:
    meta = cell.get("metadata", {}).get("nbgrader")
    if not isinstance(meta, dict):
        return None
    gid = meta.get("grade_id")
    return gid if isinstance(gid, str) else None


def is_instructor_cell(cell: NotebookNode) -> bool:
    """Cells the student may not change: tests and other locked cells."""
    return utils.is_locked(cell) or (utils.is_grade(cell) and not utils.is_solution(cell))


@dataclass
class RestoreReport:
    """What the rebuild had to repair (names are grade_ids)."""

    edited: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    retyped: list[str] = field(default_factory=list)
    missing_answers: list[str] = field(default_factory=list)
    instructor_indices: set[int] = field(default_factory=set)

    @property
    def tampered(self) -> bool:
        return bool(self.edited or self.deleted or self.duplicated or self.moved
                    or self.retyped)

    def describe(self) -> str:
        parts = []
        for label, ids in (("edited", self.edited), ("deleted", self.deleted),
                           ("duplicated", self.duplicated), ("moved", self.moved),
                           ("changed cell type", self.retyped)):
            if ids:
                parts.append(f"{label}: {', '.join(sorted(set(ids)))}")
        return "; ".join(parts)


def _strip_nbgrader(cell: NotebookNode) -> NotebookNode:
    cell = copy.deepcopy(cell)
    cell.metadata.pop("nbgrader", None)
    return cell


def _as_type(cell: NotebookNode, cell_type: str) -> NotebookNode:
    """The student's content in a cell of the master's type."""
    if cell.cell_type == cell_type:
        return cell
    if cell_type == "code":
        return nbformat.v4.new_code_cell(source=cell.source, metadata=cell.metadata)
    return nbformat.v4.new_markdown_cell(source=cell.source, metadata=cell.metadata)


def restore(submission: NotebookNode, master: NotebookNode) -> tuple[NotebookNode,
                                                                     RestoreReport]:
    """Rebuild ``submission`` around the cells of ``master`` (see the module docstring)."""
    report = RestoreReport()
    submission = copy.deepcopy(submission)
    for cell in submission.cells:  # from_dict keeps multi-line sources as lists
        if isinstance(cell.get("source"), list):
            cell.source = "".join(cell.source)
    master_cells = {gid: c for c in master.cells if (gid := _grade_id(c))}
    master_order = [gid for c in master.cells if (gid := _grade_id(c))]
    # 1. Split the submission into graded anchors and the student's own cells after them.
    attached: dict[str | None, list[NotebookNode]] = {None: []}
    answers: dict[str, NotebookNode] = {}
    seen: list[str] = []
    anchor: str | None = None
    for cell in submission.cells:
        gid = _grade_id(cell)
        if gid is not None and gid in master_cells and gid not in seen:
            seen.append(gid)
            anchor = gid
            attached.setdefault(gid, [])
            mcell = master_cells[gid]
            if is_instructor_cell(mcell):
                if cell.cell_type != mcell.cell_type:
                    report.retyped.append(gid)
                elif cell.source.strip() != release_source(mcell).strip() or \
                        cell.metadata.nbgrader.get("points") != \
                        mcell.metadata.nbgrader.get("points"):
                    report.edited.append(gid)
            else:
                if cell.cell_type != mcell.cell_type:
                    report.retyped.append(gid) if utils.is_grade(mcell) else None
                answers[gid] = cell
            continue
        if gid is not None and gid in master_cells:  # a copy of a graded cell
            if is_instructor_cell(master_cells[gid]):
                report.duplicated.append(gid)
                continue  # copies of tests are dropped: the master's test runs once
            attached.setdefault(anchor, []).append(_strip_nbgrader(cell))
            continue
        attached.setdefault(anchor, []).append(_strip_nbgrader(cell) if gid else cell)
    for gid in master_order:
        if gid not in seen and is_instructor_cell(master_cells[gid]):
            report.deleted.append(gid)
    present = [g for g in seen if g in master_order]
    expected = [g for g in master_order if g in present]
    if present != expected:
        report.moved.extend(g for g, e in zip(present, expected, strict=True) if g != e
                            and is_instructor_cell(master_cells[g]))
    # 2. Emit the master's sequence with the student's answers and own cells.
    out = copy.deepcopy(master)
    cells: list[NotebookNode] = list(attached.get(None, []))
    for mcell in master.cells:
        gid = _grade_id(mcell)
        if gid is None:
            continue  # unmarked master cells are the student's to keep or change
        if is_instructor_cell(mcell):
            report.instructor_indices.add(len(cells))
            cells.append(copy.deepcopy(mcell))
        elif gid in answers:
            cell = _as_type(copy.deepcopy(answers[gid]), mcell.cell_type)
            cell.metadata["nbgrader"] = copy.deepcopy(mcell.metadata.nbgrader)
            cells.append(cell)
        else:
            report.missing_answers.append(gid)
            if utils.is_grade(mcell):  # written answers keep their (empty) stub
                cells.append(copy.deepcopy(mcell))
        cells.extend(attached.get(gid, []))
    for index, cell in enumerate(cells):
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell["id"] = f"cell-{index:04d}"
    out.cells = cells
    out.nbformat, out.nbformat_minor = 4, max(int(out.get("nbformat_minor", 5)), 5)
    return out, report


def release_source(cell: NotebookNode) -> str:
    """The cell's source as students received it (hidden-test regions removed)."""
    lines, hidden = [], False
    for line in cell.source.split("\n"):
        if "BEGIN HIDDEN TESTS" in line:
            hidden = True
        elif "END HIDDEN TESTS" in line:
            hidden = False
        elif not hidden:
            lines.append(line)
    return "\n".join(lines)


def hidden_lines(master: NotebookNode) -> list[str]:
    """The non-trivial source lines of all hidden-test regions (for redaction)."""
    found, hidden = [], False
    for cell in master.cells:
        for line in cell.source.split("\n"):
            if "BEGIN HIDDEN TESTS" in line:
                hidden = True
            elif "END HIDDEN TESTS" in line:
                hidden = False
            elif hidden and len(line.strip()) >= 8:
                found.append(line.strip())
    return found
