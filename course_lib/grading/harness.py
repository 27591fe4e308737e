"""The trusted side of grading: declared checks run against a sandboxed function worker.

The harness never executes student code. Per submission it

1. reads the assignment's declarations (``solutions/<id>/checks.toml``, see
   :func:`load_declarations`): per test cell its grade_id, points, the text printed on
   success, and its checks (check kind from :data:`.checks.CHECKS`, the function called,
   inputs as expressions over :data:`.checks.INPUTS`, options, hidden or not);
2. picks the graded code from the rebuilt notebook (:func:`graded_cells`: the answer cells
   and the cells the student added), refuses the cells that break the rule of
   :mod:`.rules`, and has a sandboxed worker (:mod:`.worker`, no course_lib in it) run the
   rest;
3. runs each declared check: inputs are built here and sent at the call, environments
   (ps1's reward source, ps3's bandit) stay here and answer pulls over the channel, the
   result comes back as data, is validated and compared here, and the hint is made here;
4. returns, per test cell, the outputs to write into the graded notebook: nbgrader's
   ``SaveAutoGrades`` then scores them. The student's process never writes a test cell's
   output.

A call that outlives its timeout is interrupted (SIGINT), and the worker killed if it
ignores that; a worker that dies is replaced (its cells run again, minus the one that
killed it) up to :data:`MAX_SPAWNS` times.
"""

from __future__ import annotations

import os
import secrets
import select
import signal
import socket
import time
import tomllib
from dataclasses import dataclass, field

import torch

from . import rules
from .checks import (
    CHECKS,
    INPUTS,
    BanditEnv,
    BernoulliRewards,
    CheckFailed,
    Result,
    _encode_input,
    answer_to_result,
    env_spec,
)
from .executor import KernelStartError
from .worker import ProtocolError, encode, recv, send

MAX_SPAWNS = 4
GRACE = 2.0  # seconds a call has after SIGINT before its worker is killed
MAX_ENV_REQUESTS = 200_000  # pulls/draws one call may ask for
DECLARATIONS = "checks.toml"


class WorkerLost(Exception):
    """The worker died, was killed, or broke the protocol."""


class CallTimeout(Exception):
    """The worker did not answer in time and was interrupted (it lives on)."""


# --------------------------------------------------------------------------- declarations
@dataclass
class Check:
    check: str
    function: str
    args: list[str] = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    hidden: bool = False


@dataclass
class Test:
    grade_id: str
    points: float
    ok: str
    checks: list[Check]


@dataclass
class Declarations:
    tests: list[Test]
    prelude: str = "import torch"
    call_timeout: float = 20.0


def load_declarations(path: str) -> Declarations:
    """Read and validate ``checks.toml``; ValueError says what is wrong."""
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    tests = []
    for t in data.get("tests", []):
        checks = []
        for c in t.get("checks", []):
            if c.get("check") not in CHECKS:
                raise ValueError(f"{path}: test {t.get('grade_id')!r}: unknown check "
                                 f"{c.get('check')!r} (known: {', '.join(CHECKS)})")
            for expr in c.get("args", []):
                compile(expr, "<declaration>", "eval")  # SyntaxError now, not while grading
            checks.append(Check(c["check"], c.get("function") or CHECKS[c["check"]][1],
                                list(c.get("args", [])), dict(c.get("kwargs", {})),
                                bool(c.get("hidden", False))))
        if not checks:
            raise ValueError(f"{path}: test {t.get('grade_id')!r} declares no check")
        tests.append(Test(str(t["grade_id"]), float(t["points"]), str(t.get("ok", "OK")),
                          checks))
    return Declarations(tests, str(data.get("prelude", "import torch")),
                        float(data.get("call_timeout", 20.0)))


def checks_in_cell(source: str) -> tuple[list[Check], list[str]]:
    """The checks a notebook test cell makes, read from its syntax tree (never run), and
    the statements that are neither imports, check calls nor a final print (a test cell
    should have none: the declarations could not express them). Used to keep
    ``checks.toml`` and the instructor's test cells in agreement."""
    import ast

    hidden_lines: set[int] = set()
    inside = False
    for n, line in enumerate(source.split("\n"), start=1):
        if "BEGIN HIDDEN TESTS" in line:
            inside = True
        elif "END HIDDEN TESTS" in line:
            inside = False
        elif inside:
            hidden_lines.add(n)
    checks, other = [], []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        call = node.value if isinstance(node, ast.Expr) else None
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name):
            name = call.func.id
            if name.startswith("check_") and call.args and isinstance(call.args[0], ast.Name):
                checks.append(Check(name, call.args[0].id,
                                    [ast.unparse(a) for a in call.args[1:]],
                                    {k.arg: ast.literal_eval(k.value) for k in call.keywords},
                                    node.lineno in hidden_lines))
                continue
            if name == "print":
                continue
        other.append(ast.unparse(node))
    return checks, other


def evaluate_inputs(check: Check) -> list:
    """The check's inputs, built on the trusted side from its declared expressions (the
    instructor's: trusted, never student input)."""
    return [eval(expr, dict(INPUTS)) for expr in check.args]


# --------------------------------------------------------------------------- graded code
@dataclass
class Cell:
    index: int
    label: str
    source: str
    refused: list[str] = field(default_factory=list)


def graded_cells(nb, master) -> list[Cell]:
    """The student's code, in notebook order: answer cells (solution cells that are not
    graded by hand) and code cells the student added or changed. The instructor's cells
    (read-only, tests, unchanged demonstrations) are not part of it."""
    demos = {c.source.strip() for c in master.cells
             if c.cell_type == "code" and not c.metadata.get("nbgrader")}
    cells = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("nbgrader", {})
        if meta:
            if not (meta.get("solution") and not meta.get("grade")):
                continue
            label = f"the answer cell {meta.get('grade_id')!r} (cell {i + 1})"
        elif cell.source.strip() in demos or not cell.source.strip():
            continue
        else:
            label = f"cell {i + 1} (a cell you added or changed)"
        cells.append(Cell(i, label, cell.source, rules.violations(cell.source)))
    return cells


# --------------------------------------------------------------------------- the worker
class FunctionWorker:
    """The trusted end of one sandboxed function worker (spawned by the worker zygote)."""

    def __init__(self, zygote, scratch: str, policy: dict, env: dict, threads: int,
                 startup_timeout: float = 60.0):
        self.scratch = scratch
        path = os.path.join(scratch, ".fw.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        os.chmod(path, 0o777)
        if policy.get("user") and os.getuid() == 0:
            import pwd

            entry = pwd.getpwnam(policy["user"])
            for root, dirs, files in os.walk(scratch):
                for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                    os.chown(name, entry.pw_uid, entry.pw_gid)
        try:
            answer = zygote.spawn({"scratch": scratch, "socket": path, "env": env,
                                   "policy": policy, "threads": threads})
            if "error" in answer:
                raise KernelStartError(f"the sandboxed worker failed to start: "
                                       f"{answer['error']}")
            self.pid = int(answer["pid"])
            self.layers = answer.get("layers", {})
            listener.settimeout(startup_timeout)
            try:
                self.sock, _ = listener.accept()
                self.sock.settimeout(10.0)  # a frame, once it starts, arrives promptly
            except OSError as exc:
                self.kill()
                raise KernelStartError(f"the sandboxed worker did not connect: {exc}") \
                    from None
        finally:
            listener.close()

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except (ProcessLookupError, AttributeError):
            pass
        if hasattr(self, "sock"):
            self.sock.close()

    def request(self, msg: dict, timeout: float, on_env=None) -> dict:
        """Send ``msg``, answer its environment requests with ``on_env``, return the final
        answer. CallTimeout after an interrupt the worker survived; WorkerLost otherwise."""
        rid = secrets.token_hex(8)  # a forged answer sent ahead of the request cannot match
        try:
            send(self.sock, {**msg, "id": rid})
        except OSError:
            raise WorkerLost("the worker is gone") from None
        deadline = time.monotonic() + timeout
        interrupted = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if interrupted:
                    self.kill()
                    raise WorkerLost("it ignored the interrupt and was stopped")
                interrupted = True
                try:
                    os.kill(self.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
                deadline = time.monotonic() + GRACE
                continue
            ready, _, _ = select.select([self.sock], [], [], remaining)
            if not ready:
                continue
            try:
                reply = recv(self.sock)
            except (EOFError, OSError, ProtocolError) as exc:
                self.kill()
                raise WorkerLost(f"the process ended or sent garbage ({exc})") from None
            if not isinstance(reply, dict) or reply.get("id") != rid:
                self.kill()
                raise WorkerLost("it sent a message the grader did not ask for")
            if reply.get("op") == "env" and on_env is not None and not interrupted:
                try:
                    send(self.sock, {"id": rid, **on_env(reply)})
                except OSError:
                    self.kill()
                    raise WorkerLost("the worker is gone") from None
                continue
            if interrupted:
                raise CallTimeout()
            return reply


# --------------------------------------------------------------------------- the harness
@dataclass
class TestOutcome:
    grade_id: str
    points: float
    passed: bool
    message: str
    seconds: float = 0.0


class RemoteCaller:
    """A check's caller when grading: the function runs in the worker, envs stay here."""

    def __init__(self, harness: Harness, deadline: float):
        self.harness, self.deadline = harness, deadline

    def call(self, fn: str, *args, grad: int | None = None, **kwargs) -> Result:
        envs: list = []
        msg = {"op": "call", "fn": fn, "grad": grad,
               "args": [_encode_input(a, envs) for a in args],
               "kwargs": {k: _encode_input(v, envs) for k, v in kwargs.items()}}
        msg["envs"] = [env_spec(e) for e in envs]
        count = [0]

        def on_env(request: dict) -> dict:
            count[0] += 1
            try:
                if count[0] > MAX_ENV_REQUESTS:
                    raise ValueError("too many pulls in one call")
                return {"ok": True, "value": encode(_env_answer(envs, request))}
            except ValueError as exc:  # what the environment itself says (budget, indices)
                return {"ok": False, "error": str(exc)}
            except Exception:  # anything malformed the worker sent
                return {"ok": False, "error": "malformed request to the environment"}

        timeout = max(min(self.harness.decl.call_timeout, self.deadline - time.monotonic()),
                      0.5)
        if fn in self.harness.stopped:
            raise CheckFailed(f"{fn} was not called again: an earlier test had to stop it "
                              "(it did not finish in time, or it ended the grader's worker)")
        self.harness.timeouts[fn] = timeout
        worker = self.harness.ensure_worker()
        try:
            reply = worker.request(msg, timeout, on_env)
        except (CallTimeout, WorkerLost):
            self.harness.stopped.add(fn)
            raise
        return answer_to_result(fn, reply)


def _env_answer(envs: list, request: dict) -> object:
    """Answer one pull (BanditEnv) or draw (BernoulliRewards), inputs validated here."""
    index, method, args = request.get("env"), request.get("method"), request.get("args")
    if type(index) is not int or not 0 <= index < len(envs) or not isinstance(args, list) \
            or len(args) != 1:
        raise ValueError("malformed request to the environment")
    env = envs[index]
    if isinstance(env, BanditEnv) and method == "pull":
        if Result._kind(args[0]) == "list":  # a list of ints, as env.pull([0, 2]) allows
            flat = [x.get("v") for x in args[0]["v"]]
            if not all(type(x) is int for x in flat):
                raise ValueError("arms must be integer arm indices")
            return env.pull(torch.tensor(flat, dtype=torch.long))
        shape, flat = Result("pull", args[0]).tensor("arms", floating=False)
        dtype = getattr(torch, str(args[0].get("dtype")), None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError("arms must be a tensor of arm indices")
        return env.pull(torch.tensor(flat, dtype=dtype).reshape(shape))
    if isinstance(env, BernoulliRewards) and method == "draw":
        kind = Result._kind(args[0])
        n = args[0].get("v") if kind == "int" else None
        if type(n) is not int:
            raise ValueError(f"n must be a non-negative int, got a {kind}")
        return env.draw(n)
    raise ValueError(f"this environment has no method {method!r}")


class Harness:
    """Grades one submission's declared tests against its graded cells (see module doc)."""

    def __init__(self, decl: Declarations, cells: list[Cell], spawn, cell_timeout: float):
        self.decl, self.cells, self.spawn = decl, cells, spawn
        self.cell_timeout = cell_timeout
        self.worker: FunctionWorker | None = None
        self.spawns = 0
        self.bad: set[int] = set()  # cells that killed or hung a worker
        self.notes: list[str] = []
        self.timeouts: dict[str, float] = {}
        self.stopped: set[str] = set()  # functions that hung or killed the worker
        self.timed_out = False
        self.crashed = False
        self.layers: dict = {}
        self.seconds = 0.0

    def close(self) -> None:
        if self.worker is not None:
            self.worker.kill()
            self.worker = None

    def ensure_worker(self) -> FunctionWorker:
        """A live worker that ran the prelude and the graded cells (spawned if needed)."""
        while self.worker is None:
            if self.spawns >= MAX_SPAWNS:
                raise WorkerLost(f"the grader's worker was lost {self.spawns} times")
            self.spawns += 1
            worker = self.spawn()
            self.layers = worker.layers
            try:
                worker.request({"op": "exec", "code": self.decl.prelude,
                                "name": "<grader prelude>"}, 60)
            except (CallTimeout, WorkerLost):
                worker.kill()
                raise KernelStartError("the grader's prelude failed in the worker") from None
            self.worker = worker
            for cell in self.cells:
                if cell.refused or cell.index in self.bad:
                    continue
                try:
                    worker.request({"op": "exec", "code": cell.source,
                                    "name": f"<cell {cell.index + 1}>"}, self.cell_timeout)
                except CallTimeout:
                    self.timed_out = True
                    self._note(f"{cell.label} did not finish within {self.cell_timeout:g} s "
                               "when the grader ran it and was interrupted")
                except WorkerLost as exc:
                    self.bad.add(cell.index)
                    self.crashed = True
                    self._note(f"{cell.label} stopped the grader's worker ({exc}); the "
                               "grader ran your other cells without it")
                    self.worker = None
                    break
        return self.worker

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def _refused_cells(self) -> str:
        """Why the grader did not run some cells (appended to "is not defined")."""
        return " ".join(rules.message(c.label, c.refused) for c in self.cells if c.refused)

    def run(self) -> dict[str, TestOutcome]:
        outcomes = {}
        for test in self.decl.tests:
            start = time.monotonic()
            deadline = start + self.cell_timeout
            message, passed = test.ok, True
            for check in test.checks:
                core, _ = CHECKS[check.check]
                try:
                    core(RemoteCaller(self, deadline), *evaluate_inputs(check),
                         fn=check.function, **check.kwargs)
                except CheckFailed as exc:
                    message = exc.hidden() if check.hidden else str(exc)
                    if "is not defined" in str(exc) and self._refused_cells():
                        message += ". " + self._refused_cells()
                except CallTimeout:
                    self.timed_out = True
                    message = (f"{check.function} did not finish within "
                               f"{self.timeouts.get(check.function, 0):g} s and was "
                               f"interrupted{' (a hidden test)' if check.hidden else ''}")
                except WorkerLost as exc:
                    self.crashed = True
                    self.worker = None
                    message = (f"{check.function} stopped the grader's worker ({exc})"
                               f"{' in a hidden test' if check.hidden else ''}")
                else:
                    continue
                passed = False
                break
            outcomes[test.grade_id] = TestOutcome(test.grade_id, test.points, passed,
                                                  message, time.monotonic() - start)
        return outcomes
