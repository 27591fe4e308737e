"""Run one notebook, cell by cell, in a sandboxed kernel forked from the worker's zygote.

Unlike nbclient (which nbgrader's ``Execute`` uses), this executor

* kills the kernel when a cell outlives its timeout even if the code ignores
  KeyboardInterrupt, and records the timeout instead of failing the whole run;
* notices a dead kernel (``os._exit``, a signal, a crash) and marks every cell that did not
  run as failed, so a dead kernel never earns points for the tests after it;
* caps what a cell may print (huge outputs are truncated before they reach the grader's
  memory, the gradebook or the feedback);
* never runs the test cells: their outputs, which nbgrader scores, are written by the
  trusted harness (:mod:`.harness`), so nothing the notebook's code does in this kernel
  can change a grade, and the hidden tests never reach it.
"""

from __future__ import annotations

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
    truncated_cells: list[int] = field(default_factory=list)
    layers: dict = field(default_factory=dict)
    kernel_seconds: float = 0.0


class KernelStartError(RuntimeError):
    """The grader could not start a kernel (an infrastructure problem, not the student's)."""


class Zygote:
    """A worker's factory of kernels, or with ``worker=True`` of function workers (see
    :mod:`.zygote`; started by path, a worker zygote never imports course_lib)."""

    def __init__(self, preimport: list[str], env: dict[str, str], cwd: str,
                 worker: bool = False):
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zygote.py")
        cmd = [sys.executable, "-I", path, "--worker"] if worker else [sys.executable, path]
        self.proc = subprocess.Popen(
            [*cmd, *preimport],
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
                 limits: OutputLimits, skip: set[int]) -> RunReport:
    """Execute the code cells of ``nb`` in place (outputs, execution counts), except the
    cells in ``skip`` (the test cells, left for the harness to fill)."""
    report = RunReport(layers=kernel.layers)
    start = time.monotonic()
    count = 0
    stopped: CellRun | None = None
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or index in skip:
            continue
        if stopped is not None:
            cell.outputs = [_error_output(
                "NotExecuted", "this cell did not run because the kernel was stopped "
                "earlier (timeout or crash)")]
            cell.execution_count = None
            report.cells[index] = CellRun("not_run")
            continue
        run, outputs, _reply = kernel.execute(cell.source, cell_timeout, limits)
        cell.outputs = outputs
        count += 1
        cell.execution_count = count
        report.cells[index] = run
        if run.truncated:
            report.truncated_cells.append(index)
        if run.status == "timeout" and report.outcome == "completed":
            report.outcome = "timed out"  # interrupted: the kernel lives on, like nbgrader's
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
    report.kernel_seconds = time.monotonic() - start
    return report
