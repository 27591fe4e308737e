"""The grading pipeline: collect, autograde (sandboxed, parallel), feedback, export, summary.

Built on nbgrader's own pieces: its ``CourseDirectory`` and config, its gradebook
(``nbgrader.api.Gradebook``, SQLite or any SQLAlchemy URL), its ``Autograde`` converter for
creating students and submissions, timestamps, late penalties and the autograded folder
layout, its ``SaveAutoGrades``/``GetGrades`` preprocessors for scores, its ``GenerateFeedback``
converter and its CSV export. What is replaced is the execution step (see
:mod:`.executor`) and the sanitizing step (see :mod:`.restore`).
"""

from __future__ import annotations

import contextlib
import copy
import glob
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field

import nbformat
from nbformat import NotebookNode

STATUSES = ("graded", "timed out", "crashed", "tampered", "unreadable", "error")
GRADER_VERSION = "2"  # 2: grades from the trusted harness (issue 12)
DECLARATIONS = "checks.toml"
STATE_DIR = ".grading"  # under the autograded folder; glob("*") never lists it as a student

log = logging.getLogger("course_lib.grading")


@dataclass
class Options:
    """Settings of one grading run (the command line maps onto these)."""

    assignment: str
    course_dir: str = "."
    workers: int = 0  # 0: one per CPU core
    db_url: str | None = None
    cell_timeout: float | None = None  # None: nbgrader's Execute.timeout from the config
    memory_mb: int = 2048
    preimport: tuple[str, ...] = ("auto",)  # "auto": what the instructor cells import
    force: bool = False
    collect: bool = True
    feedback: bool = True
    export: str | None = "grades.csv"
    students: tuple[str, ...] = ()
    shard: tuple[int, int] = (0, 1)
    landlock: bool = True
    namespaces: bool = True
    kernel_user: str | None = "nobody"
    student_files: bool = False
    quiet: bool = False


@dataclass
class StudentResult:
    """One student's outcome, also stored as JSON under ``autograded/.grading/``."""

    student: str
    status: str
    score: float = 0.0
    max_score: float = 0.0
    message: str = ""
    seconds: float = 0.0
    fingerprint: str = ""
    regraded: bool = True
    notebooks: dict = field(default_factory=dict)
    layers: dict = field(default_factory=dict)


class GradingError(RuntimeError):
    """Grading itself could not run (bad assignment, unreachable gradebook, no kernel)."""


# --------------------------------------------------------------------------- config
def load_config(course_dir: str, db_url: str | None = None):
    """nbgrader's configuration for ``course_dir`` (its nbgrader_config.py), with overrides."""
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    course_dir = os.path.abspath(course_dir)
    cfg = Config()
    path = os.path.join(course_dir, "nbgrader_config.py")
    if os.path.exists(path):
        cfg.merge(PyFileConfigLoader("nbgrader_config.py", path=course_dir).load_config())
    if "root" not in cfg.CourseDirectory:
        cfg.CourseDirectory.root = course_dir
    if db_url:
        cfg.CourseDirectory.db_url = db_url
    return cfg


def _coursedir(cfg, assignment: str, student: str = "*"):
    from nbgrader.coursedir import CourseDirectory

    cd = CourseDirectory(config=cfg)
    cd.assignment_id = assignment
    cd.student_id = student
    return cd


def _gradebook(cd):
    from nbgrader.api import Gradebook

    return Gradebook(cd.db_url, cd.course_id)


# --------------------------------------------------------------------------- masters
def ensure_assignment(cfg, assignment: str) -> None:
    """Make sure the gradebook knows the assignment (generates it into a temp release dir,
    never touching the committed student versions, if it does not)."""
    from nbgrader.api import MissingEntry
    from nbgrader.converters import GenerateAssignment

    cd = _coursedir(cfg, assignment, ".")
    sources = sorted(glob.glob(cd.format_path(cd.source_directory, ".", assignment)
                               + "/*.ipynb"))
    if not sources:
        raise GradingError(f"no source notebooks for assignment {assignment!r} in "
                           f"{cd.format_path(cd.source_directory, '.', assignment)}")
    missing = False
    with _gradebook(cd) as gb:
        for path in sources:
            try:
                gb.find_notebook(os.path.splitext(os.path.basename(path))[0], assignment)
            except MissingEntry:
                missing = True
    if not missing:
        return
    with tempfile.TemporaryDirectory() as tmp:
        cfg2 = copy.deepcopy(cfg)
        cfg2.CourseDirectory.release_directory = tmp
        cd2 = _coursedir(cfg2, assignment, ".")
        conv = GenerateAssignment(coursedir=cd2, config=cfg2)
        conv.force = True
        conv.start()


def build_masters(cfg, assignment: str) -> dict[str, NotebookNode]:
    """Per notebook id: the source notebook as nbgrader stores it in the gradebook
    (solutions replaced by stubs, hidden tests kept), instructor cells from the gradebook."""
    from nbgrader.preprocessors import (
        CheckCellMetadata,
        ClearOutput,
        ClearSolutions,
        ComputeChecksums,
        IncludeHeaderFooter,
        LockCells,
    )

    cd = _coursedir(cfg, assignment, ".")
    masters = {}
    for path in sorted(glob.glob(cd.format_path(cd.source_directory, ".", assignment)
                                 + "/*.ipynb")):
        nb_id = os.path.splitext(os.path.basename(path))[0]
        nb = nbformat.read(path, as_version=4)
        resources = {"nbgrader": {"notebook": nb_id, "assignment": assignment,
                                  "student": ".", "db_url": cd.db_url}}
        for pp in (IncludeHeaderFooter, LockCells, ClearSolutions, ClearOutput,
                   CheckCellMetadata, ComputeChecksums):
            nb, resources = pp(config=cfg)(nb, resources)
        with _gradebook(cd) as gb:
            stored = {c.name: c for c in gb.find_notebook(nb_id, assignment).source_cells}
            for cell in nb.cells:
                meta = cell.metadata.get("nbgrader", {})
                sc = stored.get(meta.get("grade_id"))
                if sc is not None and sc.locked:  # what nbgrader restores from
                    cell.source = sc.source
                    meta["checksum"] = sc.checksum
        masters[nb_id] = nb
    return masters


def declarations_path(cfg, assignment: str) -> str:
    cd = _coursedir(cfg, assignment, ".")
    return os.path.join(cd.format_path(cd.source_directory, ".", assignment), DECLARATIONS)


def declarations(cfg, assignment: str):
    """The assignment's trusted checks (``solutions/<id>/checks.toml``)."""
    from .harness import load_declarations

    path = declarations_path(cfg, assignment)
    if not os.path.exists(path):
        raise GradingError(
            f"no {DECLARATIONS} for {assignment!r} ({path}): this grader computes grades "
            "from declared checks only; plain `nbgrader autograde` runs the notebook's test "
            "cells in the student's kernel instead (see docs/grading.md)")
    try:
        return load_declarations(path)
    except (OSError, ValueError, SyntaxError, KeyError) as exc:
        raise GradingError(f"invalid {path}: {exc}") from exc


def check_agreement(masters: dict[str, NotebookNode], decl) -> None:
    """Every autograded test cell of the masters is declared with the same points, and
    nothing else is: raise GradingError otherwise."""
    from .restore import is_instructor_cell

    cells = {}
    for nb in masters.values():
        for cell in nb.cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("grade") and is_instructor_cell(cell) and cell.cell_type == "code":
                cells[meta["grade_id"]] = float(meta.get("points", 0))
    declared = {t.grade_id: t.points for t in decl.tests}
    if cells != declared:
        raise GradingError(f"the declared checks do not match the notebook's test cells: "
                           f"notebook {cells}, {DECLARATIONS} {declared}")


def master_fingerprint(masters: dict[str, NotebookNode], extra: str = "") -> str:
    h = hashlib.sha256((GRADER_VERSION + extra).encode())
    for nb_id in sorted(masters):
        h.update(nb_id.encode())
        h.update(json.dumps([c.source for c in masters[nb_id].cells]).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- students
def submission_fingerprint(folder: str, extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for root, dirs, files in sorted(os.walk(folder)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            h.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as fh:
                h.update(hashlib.sha256(fh.read()).digest())
    return h.hexdigest()


def _state_path(cd, assignment: str, student: str) -> str:
    return os.path.join(cd.root, cd.autograded_directory, STATE_DIR, assignment,
                        f"{student}.json")


def load_state(cd, assignment: str, student: str) -> StudentResult | None:
    try:
        with open(_state_path(cd, assignment, student)) as fh:
            return StudentResult(**json.load(fh))
    except (OSError, ValueError, TypeError):
        return None


def save_state(cd, assignment: str, result: StudentResult) -> None:
    path = _state_path(cd, assignment, result.student)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(asdict(result), fh, indent=1)
    os.replace(tmp, path)


def shard_of(student: str, shards: int) -> int:
    """Stable shard of a student id (the same on every machine)."""
    return int(hashlib.sha256(student.encode()).hexdigest(), 16) % shards


# --------------------------------------------------------------------------- the worker
_W: dict = {}


def _worker_init(opts: Options, cfg) -> None:
    """Runs once in each worker process: config, masters, a zygote with the pre-imports."""
    from .executor import Zygote

    logging.basicConfig(level=logging.WARNING)
    for name in ("traitlets", "nbgrader", "Autograde", "GenerateFeedback"):
        logging.getLogger(name).setLevel(logging.ERROR)
    _W["opts"], _W["cfg"] = opts, cfg
    _W["masters"] = build_masters(cfg, opts.assignment)
    _W["scratch_base"] = tempfile.mkdtemp(prefix="w-", dir=_W["run_base"])
    os.chmod(_W["scratch_base"], 0o711)
    _W["zygote"] = Zygote(preimports(opts.preimport, _W["masters"]),
                          _kernel_env(_W["scratch_base"], 1), _W["scratch_base"])
    _W["fzygote"] = Zygote(["numpy", "torch", "torch._dynamo"],
                           _kernel_env(_W["scratch_base"], 1), _W["scratch_base"], worker=True)
    _W["decl"] = declarations(cfg, opts.assignment)
    _warm_up_optimiser()
    import atexit

    atexit.register(_worker_exit)


def _warm_up_optimiser() -> None:
    """One Adam step now: the first step of a torch optimiser imports torch._dynamo (about
    1 s), which ps3's trusted GRPO replay would otherwise pay at its first student."""
    import torch

    w = torch.zeros(1, requires_grad=True)
    torch.optim.Adam([w], lr=0.1).step()


def preimports(names: tuple[str, ...], masters: dict[str, NotebookNode]) -> list[str]:
    """Modules for the zygote to import once; ``auto`` stands for numpy, torch,
    torch._dynamo (imported lazily by the first step of any torch.optim optimiser: about 1 s
    and 800 modules per kernel otherwise) and every module a read-only (instructor) cell of
    the assignment imports at top level."""
    import ast

    from .restore import is_instructor_cell

    found: list[str] = []
    for name in names:
        if name != "auto":
            found.append(name)
            continue
        found += ["numpy", "torch", "torch._dynamo"]
        for nb in masters.values():
            for cell in nb.cells:
                if cell.cell_type != "code" or not is_instructor_cell(cell):
                    continue
                try:
                    tree = ast.parse(cell.source)
                except SyntaxError:
                    continue
                for node in tree.body:
                    if isinstance(node, ast.Import):
                        found += [a.name for a in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                        found.append(node.module)
    return list(dict.fromkeys(found))


def _worker_exit() -> None:
    for name in ("zygote", "fzygote"):
        if name in _W:
            _W[name].close()
    shutil.rmtree(_W.get("scratch_base", ""), ignore_errors=True)


def _kernel_env(scratch: str, threads: int) -> dict[str, str]:
    """The whole environment of a grading kernel: nothing of the grader's (no DB URLs,
    tokens or passwords), HOME and TMPDIR inside the scratch folder."""
    bindir = os.path.dirname(sys.executable)
    return {
        "PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": scratch, "TMPDIR": os.path.join(scratch, "tmp"),
        "MPLCONFIGDIR": os.path.join(scratch, ".config", "matplotlib"),
        "IPYTHONDIR": os.path.join(scratch, ".ipython"),
        "JUPYTER_RUNTIME_DIR": os.path.join(scratch, ".kernel"),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
        "NBGRADER_EXECUTION": "autograde", "MALLOC_ARENA_MAX": "2",
    }


def _policy(opts: Options, scratch: str) -> dict:
    import course_lib

    user = opts.kernel_user if os.getuid() == 0 else None
    if user and not _world_readable():
        user = None  # e.g. Python under /root: stay root inside the user namespace
    pkg = os.path.dirname(os.path.abspath(course_lib.__file__))
    return {"scratch": scratch, "read_only": [pkg], "memory_mb": opts.memory_mb,
            "user": user, "landlock": opts.landlock, "namespaces": opts.namespaces}


def _world_readable() -> bool:
    """Whether an unprivileged user can run this interpreter (e.g. not under /root)."""
    for path in (sys.executable, sys.base_prefix, sys.prefix):
        real = os.path.realpath(path)
        parts = real.split(os.sep)
        for i in range(2, len(parts) + 1):
            prefix = os.sep.join(parts[:i]) or os.sep
            try:
                mode = os.stat(prefix).st_mode
            except OSError:
                return False
            if not mode & 0o001:
                return False
    return True


def _make_scratch(base: str, release: str, submitted: str | None) -> str:
    """A fresh folder holding only what the student's code needs: the released data files
    (and, with ``--student-files``, the other files the student submitted). No notebooks,
    no tests, no gradebook.

    Student files are off by default: ``nbgrader collect`` copies the world-writable
    exchange with symlinks dereferenced, so a "data file" there may be a copy of anything
    the instructor can read (the solutions, say), made at collect time.
    """
    scratch = tempfile.mkdtemp(prefix="s-", dir=base)
    for src_root in (submitted, release):
        if not src_root or not os.path.isdir(src_root):
            continue
        for root, dirs, files in os.walk(src_root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                src = os.path.join(root, name)
                if name.endswith(".ipynb") or name == "timestamp.txt" or os.path.islink(src):
                    continue
                dst = os.path.join(scratch, os.path.relpath(src, src_root))
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copyfile(src, dst)
    for sub in ("tmp", ".config/matplotlib", ".ipython", ".kernel"):
        os.makedirs(os.path.join(scratch, sub), exist_ok=True)
    return scratch


def _status_cell(status: str, message: str) -> NotebookNode:
    cell = nbformat.v4.new_markdown_cell(
        f"**Autograder: {status}.** {message}".strip())
    cell.metadata["grading_status"] = True
    return cell


def _zero_tests(nb: NotebookNode, why: str) -> None:
    from .executor import _error_output
    from .restore import is_instructor_cell

    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("grade") and is_instructor_cell(cell):
            cell.outputs = [_error_output("NotGraded", why)]


def _test_cells(nb: NotebookNode) -> dict[int, str]:
    """Index -> grade_id of the autograded test cells (instructor code cells with points)."""
    from .restore import is_instructor_cell

    found = {}
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("grade") and is_instructor_cell(cell):
            found[i] = meta["grade_id"]
    return found


def _kernel_phase(conv, nb, resources, notebook_filename, skip: set[int]):
    """Run the notebook's other cells in a sandboxed kernel, for the feedback and the
    hand-graded answers (plots, printed results). Nothing it does reaches a grade."""
    from .executor import OutputLimits, SandboxedKernel, run_notebook

    opts = _W["opts"]
    scratch = _make_scratch(
        _W["scratch_base"],
        conv.coursedir.format_path(conv.coursedir.release_directory, ".",
                                   resources["nbgrader"]["assignment"]),
        os.path.dirname(notebook_filename) if opts.student_files else None)
    try:
        kernel = SandboxedKernel(_W["zygote"], scratch, _policy(opts, scratch),
                                 _kernel_env(scratch, _threads(opts)), _threads(opts))
        try:
            return run_notebook(nb, kernel, _W["timeout"], OutputLimits(), skip)
        finally:
            kernel.shutdown()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _threads(opts: Options) -> int:
    return max(1, (os.cpu_count() or 1) // max(opts.workers, 1))


def _harness_phase(nb: NotebookNode, master: NotebookNode, tests: dict[int, str]):
    """The grade: declared checks against the student's functions in a sandboxed worker;
    writes each test cell's outputs (what nbgrader scores)."""
    from .executor import _error_output
    from .harness import FunctionWorker, Harness, graded_cells

    opts = _W["opts"]
    scratches: list[str] = []

    def spawn() -> FunctionWorker:
        scratch = tempfile.mkdtemp(prefix="f-", dir=_W["scratch_base"])
        os.makedirs(os.path.join(scratch, "tmp"), exist_ok=True)
        scratches.append(scratch)
        policy = {**_policy(opts, scratch), "read_only": []}
        return FunctionWorker(_W["fzygote"], scratch, policy, _kernel_env(scratch, 1), 1)

    start = time.monotonic()
    harness = Harness(_W["decl"], graded_cells(nb, master), spawn, _W["timeout"])
    try:
        outcomes = harness.run()
    finally:
        harness.close()
        for scratch in scratches:
            shutil.rmtree(scratch, ignore_errors=True)
    harness.seconds = time.monotonic() - start
    for index, grade_id in tests.items():
        outcome = outcomes.get(grade_id)
        cell = nb.cells[index]
        cell.execution_count = None
        if outcome is not None and outcome.passed:
            cell.outputs = [NotebookNode(output_type="stream", name="stdout",
                                         text=outcome.message + "\n")]
        else:
            why = outcome.message if outcome is not None else "this test is not declared"
            cell.outputs = [_error_output("CheckFailed", why)]
    return harness


def _make_converter():
    """nbgrader's Autograde converter with the in-memory, sandboxed notebook step."""
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import (
        AssignLatePenalties,
        CheckCellMetadata,
        LimitOutput,
        SaveAutoGrades,
    )

    from .executor import KernelStartError
    from .restore import Unreadable, read_submission, restore

    class SandboxedAutograde(Autograde):
        autograde_preprocessors = [ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades,
                                   AssignLatePenalties, CheckCellMetadata]

        def convert_single_notebook(self, notebook_filename: str) -> None:
            opts = _W["opts"]
            resources = self.init_single_notebook_resources(notebook_filename)
            nb_id = resources["nbgrader"]["notebook"]
            master = _W["masters"][nb_id]
            spec = master.metadata.get("kernelspec", {})
            record = {"status": "graded", "message": ""}
            try:
                sub = read_submission(notebook_filename, spec.get("name", "python3"),
                                      spec.get("language", "python"))
            except Unreadable as exc:
                nb = copy.deepcopy(master)
                _zero_tests(nb, f"the notebook could not be read: {exc}")
                record = {"status": "unreadable", "message": str(exc)}
            else:
                nb, rep = restore(sub, master)
                tests = _test_cells(nb)
                run = _kernel_phase(self, nb, resources, notebook_filename, set(tests))
                if run.outcome == "error":
                    raise KernelStartError(run.message)
                harness = _harness_phase(nb, master, tests)
                notes = []
                if run.outcome in ("timed out", "crashed"):
                    record = {"status": run.outcome, "message": run.message}
                elif harness.timed_out:
                    record = {"status": "timed out", "message": ""}
                elif harness.crashed:
                    record = {"status": "crashed", "message": ""}
                if rep.tampered:
                    record = {"status": "tampered", "message": record["message"]}
                    notes.append("test cells were restored from the instructor's version ("
                                 + rep.describe() + ")")
                notes += harness.notes
                oom = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and any(
                    o.get("ename") == "MemoryError" for o in c.outputs)]
                if oom:
                    notes.append(f"cell {oom[0] + 1} hit the memory limit ({opts.memory_mb} "
                                 "MiB per kernel)")
                if run.truncated_cells:
                    notes.append(f"the output of {len(run.truncated_cells)} cell(s) was "
                                 "truncated")
                record["message"] = "; ".join([m for m in [record["message"], *notes] if m])
                record["layers"] = run.layers
                record["worker_layers"] = harness.layers
                record["kernel_seconds"] = round(run.kernel_seconds, 3)
                record["harness_seconds"] = round(harness.seconds, 3)
                slow = sorted(run.cells.items(), key=lambda kv: -kv[1].seconds)[:3]
                record["slowest_cells"] = [  # 1-based, as in the feedback
                    [i + 1, round(c.seconds, 3)] for i, c in slow]
            nb.cells.insert(0, _status_cell(record["status"], record["message"]))
            self._records[nb_id] = record
            self._init_preprocessors()
            output, resources = self.exporter.from_notebook_node(nb, resources=resources)
            self.write_single_notebook(output, resources)

        def _init_preprocessors(self) -> None:
            self.exporter._preprocessors = []
            for pp in self.autograde_preprocessors:
                self.exporter.register_preprocessor(pp)

    return SandboxedAutograde


def _feedback(cfg, cd, assignment: str, student: str) -> None:
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbconvert.writers import FilesWriter
    from nbgrader.converters import GenerateFeedback
    from nbgrader.preprocessors import ClearHiddenTests, GetGrades

    from .feedback import SanitizeFeedback

    class CachedFeedback(GenerateFeedback):
        """GenerateFeedback that keeps its HTML exporter (compiled templates) per worker."""

        def start(self) -> None:
            self.init_notebooks()
            self.writer = FilesWriter(parent=self, config=self.config)
            if "feedback_exporter" not in _W:
                exporter = self.exporter_class(parent=self, config=self.config)
                for pp in self.preprocessors:
                    exporter.register_preprocessor(pp)
                _W["feedback_exporter"] = exporter
            self.exporter = _W["feedback_exporter"]
            here = os.getcwd()
            os.chdir(self.coursedir.root)
            try:
                self.convert_notebooks()
            finally:
                os.chdir(here)

    conv = CachedFeedback(coursedir=cd, config=cfg)
    extra = [p for p in conv.preprocessors
             if p not in (GetGrades, CSSHTMLHeaderPreprocessor, ClearHiddenTests,
                          SanitizeFeedback)]
    conv.preprocessors = [GetGrades, CSSHTMLHeaderPreprocessor, SanitizeFeedback, *extra,
                          ClearHiddenTests]
    conv.force = True
    conv.start()


def grade_one(student: str, fingerprint: str) -> StudentResult:
    """Grade one student's submission of the run's assignment (in a worker process)."""
    from nbgrader.converters.base import NbGraderException

    opts, cfg = _W["opts"], _W["cfg"]
    start = time.monotonic()
    cd = _coursedir(cfg, opts.assignment, student)
    result = StudentResult(student=student, status="graded", fingerprint=fingerprint)
    conv_cls = _make_converter()
    conv = conv_cls(coursedir=cd, config=cfg)
    conv.force = True
    conv._records = {}
    try:
        for attempt in range(5):  # SQLite may be busy while other workers write
            try:
                conv.start()
                break
            except NbGraderException as exc:
                if attempt == 4 or "database" not in str(exc):
                    raise
                time.sleep(0.5 * (attempt + 1))
        if opts.feedback:
            _feedback(cfg, _coursedir(cfg, opts.assignment, student), opts.assignment,
                      student)
        with _gradebook(cd) as gb:
            sub = gb.find_submission(opts.assignment, student)
            result.score = round(float(sub.score) - float(sub.late_submission_penalty or 0), 4)
            result.max_score = float(sub.max_score)
    except Exception as exc:
        result.status = "error"
        result.message = f"grading failed: {exc!r}"
        log.error("grading %s failed:\n%s", student, traceback.format_exc())
    records = conv._records
    result.notebooks = records
    if result.status != "error":
        order = ["unreadable", "tampered", "timed out", "crashed", "graded"]
        statuses = [r["status"] for r in records.values()] or ["graded"]
        result.status = min(statuses, key=order.index)
        result.message = " | ".join(
            f"{nb}: {r['message']}" if len(records) > 1 else r["message"]
            for nb, r in records.items() if r.get("message"))
        result.layers = next((r["layers"] for r in records.values() if "layers" in r), {})
    result.seconds = round(time.monotonic() - start, 3)
    save_state(cd, opts.assignment, result)
    return result


# --------------------------------------------------------------------------- the command
def _collect(cfg, assignment: str) -> None:
    from nbgrader.apps.api import NbGraderAPI

    cd = _coursedir(cfg, assignment)
    exchange = cfg.Exchange.get("root", "/srv/nbgrader/exchange")
    if not cd.course_id or not os.path.isdir(os.path.join(exchange, cd.course_id)):
        return  # no exchange for this course: submissions are placed in submitted/ directly
    api = NbGraderAPI(coursedir=cd, config=cfg)
    if not api.exchange_is_functional:
        return
    with contextlib.redirect_stdout(sys.stderr):
        result = api.collect(assignment, update=True)
    if not result.get("success", False) and "No submissions" not in result.get("log", ""):
        log.warning("nbgrader collect reported a problem:\n%s", result.get("error", ""))


def run(opts: Options) -> list[StudentResult]:
    """Grade ``opts.assignment`` for every (selected) student; returns one result each.

    Raises :class:`GradingError` only when grading itself cannot run.
    """
    from nbgrader.plugins import CsvExportPlugin

    cfg = load_config(opts.course_dir, opts.db_url)
    cd = _coursedir(cfg, opts.assignment)
    if not opts.workers:
        opts.workers = os.cpu_count() or 1
    timeout = opts.cell_timeout
    if timeout is None:
        timeout = float(cfg.Execute.get("timeout", 30) or 30)
    try:
        if opts.collect:
            _collect(cfg, opts.assignment)
        ensure_assignment(cfg, opts.assignment)
        masters = build_masters(cfg, opts.assignment)
        decl = declarations(cfg, opts.assignment)
        check_agreement(masters, decl)
        with open(declarations_path(cfg, opts.assignment), "rb") as fh:
            decl_text = hashlib.sha256(fh.read()).hexdigest()
    except GradingError:
        raise
    except Exception as exc:
        raise GradingError(f"could not prepare assignment {opts.assignment!r}: {exc}") from exc
    extra = master_fingerprint(masters, decl_text) + json.dumps([timeout, opts.memory_mb])
    pattern = cd.format_path(cd.submitted_directory, "*", opts.assignment)
    students = sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob(pattern)
                      if os.path.isdir(p))
    if opts.students:
        students = [s for s in students if s in set(opts.students)]
    index, shards = opts.shard
    students = [s for s in students if shard_of(s, shards) == index]
    todo: list[tuple[str, str]] = []
    results: dict[str, StudentResult] = {}
    for student in students:
        folder = cd.format_path(cd.submitted_directory, student, opts.assignment)
        fp = submission_fingerprint(folder, extra)
        old = load_state(cd, opts.assignment, student)
        graded = os.path.isdir(cd.format_path(cd.autograded_directory, student,
                                              opts.assignment))
        if old and not opts.force and old.fingerprint == fp and graded \
                and old.status != "error":
            old.regraded = False
            results[student] = old
        else:
            todo.append((student, fp))
    # Workers end without running atexit handlers: the run owns the scratch folders.
    run_base = tempfile.mkdtemp(prefix="course-grading-")
    os.chmod(run_base, 0o711)
    try:
        if todo:
            _grade_all(opts, cfg, timeout, run_base, todo, results)
    finally:
        shutil.rmtree(run_base, ignore_errors=True)
    if opts.export:
        try:
            plugin = CsvExportPlugin(config=cfg)
            plugin.to = os.path.join(cd.root, opts.export) if not os.path.isabs(
                opts.export) else opts.export
            with _gradebook(cd) as gb, contextlib.redirect_stdout(sys.stderr):
                plugin.export(gb)
        except Exception as exc:
            raise GradingError(f"could not export grades: {exc}") from exc
    return [results[s] for s in students]


def _grade_all(opts: Options, cfg, timeout: float, run_base: str,
               todo: list[tuple[str, str]], results: dict[str, StudentResult]) -> None:
    with ProcessPoolExecutor(max_workers=min(opts.workers, len(todo)), initializer=_pool_init,
                             initargs=(opts, cfg, timeout, run_base)) as pool:
        futures = {pool.submit(grade_one, s, fp): s for s, fp in todo}
        for fut in as_completed(futures):
            student = futures[fut]
            try:
                results[student] = fut.result()
            except Exception as exc:  # a worker process died: grading itself failed
                results[student] = StudentResult(student, "error",
                                                 message=f"worker failed: {exc!r}")
            if not opts.quiet:
                r = results[student]
                print(f"  graded {student}: {r.status} {r.score:g}/{r.max_score:g} "
                      f"({r.seconds:.1f} s)", file=sys.stderr, flush=True)


def _pool_init(opts: Options, cfg, timeout: float, run_base: str) -> None:
    _W["timeout"] = timeout
    _W["run_base"] = run_base
    _worker_init(opts, cfg)


def format_summary(results: list[StudentResult]) -> str:
    """The per-student table the command prints."""
    width = max([len("student"), *(len(r.student) for r in results)])
    lines = [f"{'student':<{width}}  {'score':>11}  {'status':<10}  message"]
    for r in results:
        score = f"{r.score:g}/{r.max_score:g}"
        again = "" if r.regraded else " (unchanged, not regraded)"
        lines.append(f"{r.student:<{width}}  {score:>11}  {r.status:<10}  "
                     f"{(r.message or '')[:160]}{again}")
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    layers = next((r.layers for r in results if r.layers and r.regraded), None)
    if layers:
        lines.append(
            f"sandbox: Landlock ABI {layers.get('landlock_abi', 0) or 'unavailable'}, "
            f"namespaces {'/'.join(layers.get('namespaces') or []) or 'none'}, "
            f"kernel user {layers.get('uid') or 'unchanged'}")
    lines.append("totals: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return "\n".join(lines)
