"""Run one notebook, cell by cell, in a sandboxed kernel forked from the worker's zygote.

Unlike nbclient (which nbgrader's ``Execute`` uses), this executor

* kills the kernel when a cell outlives its timeout even if the code ignores
  KeyboardInterrupt, and records the timeout instead of failing the whole run;
* notices a dead kernel (``os._exit``, a signal, a crash) and marks every cell that did not
  run as failed, so a dead kernel never earns points for the tests after it;
* caps what a cell may print (huge outputs are truncated before they reach the grader's
  memory, the gradebook or the feedback);
* runs hidden-test cells without storing them in the kernel's history, wipes them from
  ``linecache`` afterwards, and checks at the end that the kernel's error reporting and
  execution machinery were not replaced by the student's code (``tampered``).
"""

from __future__ import annotations

import ast
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from nbformat import NotebookNode
from nbformat.v4 import output_from_msg

HIDDEN_MARK = "BEGIN HIDDEN TESTS"

# Runs before any student code: snapshots the objects whose replacement would let code
# fake test results, and installs an audit hook (audit hooks cannot be removed) that notes
# attempts to add further audit hooks. The names are random per run.
_PREAMBLE = r'''
def {name}():
    import sys, builtins
    ip = get_ipython()
    k = getattr(ip, "kernel", None)
    def snapshot(_ip=ip, _k=k, _sys=sys):
        objs = {{
            "run_cell": _ip.run_cell, "run_cell_async": _ip.run_cell_async,
            "run_ast_nodes": _ip.run_ast_nodes, "run_code": _ip.run_code,
            "showtraceback": _ip.showtraceback, "_showtraceback": _ip._showtraceback,
            "showsyntaxerror": _ip.showsyntaxerror,
            "do_execute": getattr(_k, "do_execute", None),
            "execute_request": getattr(_k, "shell_handlers", {{}}).get("execute_request"),
            "send_response": getattr(_k, "send_response", None),
        }}
        return {{n: getattr(v, "__func__", v) for n, v in objs.items()}}
    base = snapshot()
    bins = dict(vars(builtins))
    flags = []
    def hook(event, args, _flags=flags):
        if event == "sys.addaudithook":  # (settrace/setprofile: libraries use them)
            _flags.append(event)
    sys.addaudithook(hook)
    def check(_snap=snapshot, _base=base, _bins=bins, _flags=flags, _sys=sys, _b=builtins):
        now = _snap()
        bad = sorted(n for n, v in now.items() if v is not _base[n])
        bad += sorted("builtins." + n for n, v in vars(_b).items()
                      if n in _bins and v is not _bins[n] and not n.startswith("_")
                      and n not in ("input", "raw_input", "display", "get_ipython"))
        if _sys.gettrace() is not None or _sys.getprofile() is not None:
            bad.append("tracer")
        bad += sorted(set(_flags))
        return bad
    return check
{check} = {name}()
del {name}
'''

# After each hidden-test cell: forget its source (linecache keeps every cell for
# tracebacks) and the last exception (its frames hold the test's code objects).
_SCRUB = r'''
import linecache as _lc, sys as _s
for _c in (_lc.cache, getattr(_lc, "_ipython_cache", {{}})):
    for _key in [k for k, v in list(_c.items())
                 if any("{mark}" in line for line in (v[2] if len(v) > 2 else []))]:
        _c.pop(_key, None)
_s.last_type = _s.last_value = _s.last_traceback = None
_s.__dict__.pop("last_exc", None)
del _lc, _s, _c
'''


@dataclass
class OutputLimits:
    """Caps on what one cell may leave in the graded notebook and the feedback."""

    max_text_chars: int = 20_000
    max_outputs: int = 50
    max_data_bytes: int = 2_000_000
    max_traceback_lines: int = 60


@dataclass
class CellRun:
    """What happened to one cell."""

    status: str  # "ok", "error", "timeout" (interrupted), "killed", "died", "not_run"
    seconds: float = 0.0
    truncated: bool = False


@dataclass
class RunReport:
    """What happened to one notebook."""

    outcome: str = "completed"  # "completed", "timed out", "crashed", "tampered", "error"
    message: str = ""
    cells: dict[int, CellRun] = field(default_factory=dict)
    tampered_with: list[str] = field(default_factory=list)
    truncated_cells: list[int] = field(default_factory=list)
    layers: dict = field(default_factory=dict)
    kernel_seconds: float = 0.0


class KernelStartError(RuntimeError):
    """The grader could not start a kernel (an infrastructure problem, not the student's)."""


class Zygote:
    """A worker's kernel factory process (see :mod:`.zygote`)."""

    def __init__(self, preimport: list[str], env: dict[str, str], cwd: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "course_lib.grading.zygote", *preimport],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=cwd, text=True,
            close_fds=True,
        )
        line = self.proc.stdout.readline()
        if not line:
            raise KernelStartError("the kernel zygote failed to start (see stderr above)")
        self.info = json.loads(line)

    def spawn(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise KernelStartError("the kernel zygote died")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _error_output(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=evalue,
                        traceback=[f"{ename}: {evalue}"])


class SandboxedKernel:
    """One kernel for one notebook of one student; always call :meth:`shutdown`."""

    def __init__(self, zygote: Zygote, scratch: str, policy: dict, env: dict[str, str],
                 threads: int, startup_timeout: float = 60.0):
        from jupyter_client import BlockingKernelClient

        kdir = os.path.join(scratch, ".kernel")
        os.makedirs(kdir, exist_ok=True)
        self.connection_file = os.path.join(kdir, "connection.json")
        info = dict(transport="ipc", ip=os.path.join(kdir, "k"), shell_port=1, iopub_port=2,
                    stdin_port=3, control_port=4, hb_port=5, key=secrets.token_hex(32),
                    signature_scheme="hmac-sha256", kernel_name="python3")
        with open(self.connection_file, "w") as fh:
            json.dump(info, fh)
        if policy.get("user") and os.getuid() == 0:
            import pwd

            entry = pwd.getpwnam(policy["user"])
            for root, dirs, files in os.walk(scratch):
                for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                    os.chown(name, entry.pw_uid, entry.pw_gid)
        answer = zygote.spawn({"scratch": scratch, "connection_file": self.connection_file,
                               "env": env, "policy": policy, "threads": threads})
        if "error" in answer:
            raise KernelStartError(f"sandboxed kernel failed to start: {answer['error']}")
        self.pid = int(answer["pid"])
        self.layers = answer.get("layers", {})
        self.client = BlockingKernelClient(connection_file=self.connection_file)
        self.client.load_connection_file()
        self.client.start_channels()
        try:
            self.client.wait_for_ready(timeout=startup_timeout)
        except RuntimeError as exc:
            self.shutdown()
            raise KernelStartError(f"kernel did not become ready: {exc}") from exc

    def alive(self) -> bool:
        return _alive(self.pid)

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 5
        while _alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def shutdown(self) -> None:
        try:
            self.client.stop_channels()
        finally:
            self.kill()

    def execute(self, code: str, timeout: float, limits: OutputLimits,
                store_history: bool = True, silent: bool = False,
                user_expressions: dict | None = None,
                grace: float = 5.0) -> tuple[CellRun, list[NotebookNode], dict | None]:
        """Run ``code``; returns what happened, the (capped) outputs and the shell reply."""
        start = time.monotonic()
        msg_id = self.client.execute(code, silent=silent, store_history=store_history,
                                     user_expressions=user_expressions or {},
                                     allow_stdin=False, stop_on_error=False)
        outputs: list[NotebookNode] = []
        text_chars = 0
        dropped = 0
        deadline = start + timeout
        interrupted_at = None
        idle = False
        while not idle:
            now = time.monotonic()
            if now > deadline and interrupted_at is None:
                interrupted_at = now
                try:
                    os.kill(self.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
            if interrupted_at is not None and now > interrupted_at + grace:
                self.kill()  # the code ignored KeyboardInterrupt
                outputs.append(_error_output(
                    "CellTimeoutError",
                    f"the cell did not finish within {timeout:g} s and ignored the interrupt; "
                    "the kernel was stopped, so later cells did not run"))
                return CellRun("killed", time.monotonic() - start, dropped > 0), outputs, None
            try:
                msg = self.client.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                if not self.alive():
                    outputs.append(_error_output(
                        "KernelDied", "the kernel process died while running this cell "
                        "(os._exit, a fatal signal or a crash); later cells did not run"))
                    return CellRun("died", time.monotonic() - start, dropped > 0), outputs, None
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            content = msg["content"]
            if kind == "status":
                idle = content.get("execution_state") == "idle"
                continue
            if kind == "clear_output":
                outputs.clear()
                text_chars = 0
                continue
            if kind not in ("stream", "display_data", "execute_result", "error"):
                continue
            if kind == "stream":
                room = limits.max_text_chars - text_chars
                text = content.get("text", "")
                if len(text) > room:
                    dropped += len(text) - max(room, 0)
                    text = text[:max(room, 0)]
                text_chars += len(text)
                if not text:
                    continue
                if outputs and outputs[-1].output_type == "stream" and \
                        outputs[-1].name == content.get("name"):
                    outputs[-1].text += text
                    continue
                content = {**content, "text": text}
                msg = {**msg, "content": content}
            elif kind == "error":
                tb = content.get("traceback", [])
                if len(tb) > limits.max_traceback_lines:
                    half = limits.max_traceback_lines // 2
                    tb = tb[:half] + ["... traceback truncated by the grader ..."] + tb[-half:]
                content = {**content, "traceback": tb,
                           "evalue": str(content.get("evalue", ""))[:limits.max_text_chars]}
                msg = {**msg, "content": content}
            else:
                size = sum(len(json.dumps(v)) for v in content.get("data", {}).values())
                if size > limits.max_data_bytes:
                    dropped += size
                    continue
            if len(outputs) >= limits.max_outputs:
                dropped += 1
                continue
            outputs.append(output_from_msg(msg))
        reply = None
        while reply is None:
            remaining = max(deadline - time.monotonic(), 0) + grace
            try:
                msg = self.client.get_shell_msg(timeout=min(remaining, 5.0))
            except queue.Empty:
                if not self.alive() or time.monotonic() > deadline + grace:
                    break
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                reply = msg
        if dropped:
            outputs.append(NotebookNode(
                output_type="stream", name="stdout",
                text=f"\n... output truncated by the grader ({dropped} characters, "
                     "items or bytes dropped) ...\n"))
        seconds = time.monotonic() - start
        if interrupted_at is not None:
            outputs.append(_error_output(
                "CellTimeoutError", f"the cell did not finish within {timeout:g} s"))
            return CellRun("timeout", seconds, dropped > 0), outputs, reply
        if reply is None:
            if not self.alive():
                outputs.append(_error_output(
                    "KernelDied", "the kernel process died while running this cell"))
                return CellRun("died", seconds, dropped > 0), outputs, None
            outputs.append(_error_output("NoReply", "the kernel did not answer"))
            return CellRun("error", seconds, dropped > 0), outputs, None
        status = reply["content"].get("status", "error")
        if status != "ok" and not any(o.output_type == "error" for o in outputs):
            outputs.append(_error_output(reply["content"].get("ename", "Error"),
                                         str(reply["content"].get("evalue", ""))))
        return CellRun("ok" if status == "ok" else "error", seconds, dropped > 0), outputs, reply


def run_notebook(nb: NotebookNode, kernel: SandboxedKernel, cell_timeout: float,
                 limits: OutputLimits, instructor_cells: set[int]) -> RunReport:
    """Execute the code cells of ``nb`` in place (outputs, execution counts).

    ``instructor_cells`` are the indices of cells restored from the instructor's source; a
    cell among them that holds hidden tests runs without history and is scrubbed afterwards.
    """
    report = RunReport(layers=kernel.layers)
    check = "_g" + secrets.token_hex(6)
    start = time.monotonic()
    pre, _, _ = kernel.execute(_PREAMBLE.format(name="_g" + secrets.token_hex(6), check=check),
                               30, limits, store_history=False, silent=True)
    if pre.status != "ok":
        report.outcome, report.message = "error", "the grader's preamble failed in the kernel"
        return report
    count = 0
    stopped: CellRun | None = None
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if stopped is not None:
            cell.outputs = [_error_output(
                "NotExecuted", "this cell did not run because the kernel was stopped "
                "earlier (timeout or crash)")]
            cell.execution_count = None
            report.cells[index] = CellRun("not_run")
            continue
        hidden = index in instructor_cells and HIDDEN_MARK in cell.source
        run, outputs, reply = kernel.execute(cell.source, cell_timeout, limits,
                                             store_history=not hidden)
        cell.outputs = outputs
        if not hidden:
            count += 1
        cell.execution_count = count if not hidden else None
        report.cells[index] = run
        if run.truncated:
            report.truncated_cells.append(index)
        if run.status == "timeout":  # interrupted: the kernel lives on, like nbgrader's
            if report.outcome == "completed":
                report.outcome = "timed out"
                report.message = (f"cell {index + 1} did not finish within {cell_timeout:g} s "
                                  "and was interrupted")
        if run.status in ("killed", "died"):
            stopped = run
            report.outcome = "timed out" if run.status == "killed" else "crashed"
            report.message = (
                f"cell {index + 1} did not finish within {cell_timeout:g} s and ignored the "
                "interrupt; the kernel was stopped and the cells after it did not run"
                if run.status == "killed" else
                f"the kernel died in cell {index + 1}; the cells after it did not run")
            continue
        if hidden:
            kernel.execute(_SCRUB.format(mark=HIDDEN_MARK), 30, limits,
                           store_history=False, silent=True)
    if stopped is None:
        timed_out = report.outcome == "timed out"
        _integrity(kernel, check, limits, report)
        if timed_out and report.outcome == "completed":
            report.outcome = "timed out"
    report.kernel_seconds = time.monotonic() - start
    return report


def _integrity(kernel: SandboxedKernel, check: str, limits: OutputLimits,
               report: RunReport) -> None:
    """Canary and hook check after the last cell; sets ``report.outcome = 'tampered'``."""
    nonce = secrets.token_hex(8)
    run, outputs, reply = kernel.execute(
        f"raise RuntimeError('grader canary {nonce}')", 30, limits, store_history=False)
    canary_ok = (
        run.status == "error" and reply is not None
        and reply["content"].get("status") == "error"
        and nonce in str(reply["content"].get("evalue", ""))
        and any(o.output_type == "error" and nonce in str(o.get("evalue", ""))
                for o in outputs))
    bad: list[str] = []
    if run.status in ("timeout", "killed", "died"):
        report.outcome = "crashed" if run.status == "died" else "timed out"
        report.message = "the kernel stopped responding after the last cell"
        return
    if not canary_ok:
        bad.append("error reporting")
    run, _, reply = kernel.execute("", 30, limits, store_history=False, silent=True,
                                   user_expressions={"bad": f"{check}()"})
    try:
        expr = reply["content"]["user_expressions"]["bad"]
        found = ast.literal_eval(expr["data"]["text/plain"])  # a list of str
        bad += [str(x) for x in found]
    except Exception:
        bad.append("integrity check")
    if bad:
        report.outcome = "tampered"
        report.tampered_with = bad
        report.message = ("the notebook's code replaced parts of the grading machinery ("
                          + ", ".join(bad) + "); test results cannot be trusted")
