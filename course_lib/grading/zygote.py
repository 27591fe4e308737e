"""A pre-imported process factory: one per grading worker, never runs student code itself.

Starting a fresh kernel and importing torch costs seconds per submission; forking a
process that already imported them costs milliseconds. The zygote imports ipykernel and the
modules the assignments use (``--preimport``), then serves requests on stdin (one JSON
object per line) and answers on stdout::

    {"scratch": "/tmp/.../s1", "connection_file": "...", "env": {...}, "policy": {...},
     "threads": 1}
    -> {"pid": 1234, "layers": {"uid": "nobody", "namespaces": ["user", "net", "pid"],
                               "landlock_abi": 7}}

``pid`` is the init process of the kernel's sandbox (see :mod:`.sandbox`): SIGINT to it
interrupts the kernel, SIGKILL to it ends the kernel and everything the student started.

With ``--worker`` the zygote makes sandboxed *function workers* (:mod:`.worker`) instead
of kernels: the request names a unix socket (``"socket"``) the worker connects to. That
zygote is started by path with ``python -I``, so it never imports the ``course_lib``
package (this file and its siblings are loaded by path), and its workers cannot read
course_lib's files (:func:`.sandbox.worker_read_paths`): the reference implementations
do not exist where the student's functions are called.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import random
import signal
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _sibling(name: str):
    """A module of this folder loaded by path (no import of the course_lib package)."""
    key = f"_course_grading_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, os.path.join(_HERE, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


_sb = _sibling("sandbox")
SandboxPolicy = _sb.SandboxPolicy


def _confine(request: dict, policy: SandboxPolicy, report_fd: int, worker: bool) -> None:
    """In K: limits, Landlock, report the layers, clean environment, fresh random state."""
    layers = {}
    try:
        _sb.set_limits(policy)
        os.chdir(policy.scratch)
        if policy.landlock:
            if worker:
                read, listed = _sb.worker_read_paths()
            else:
                read, listed = _sb.read_only_paths(policy.read_only), []
            layers["landlock_abi"] = _sb.apply_landlock(
                [policy.scratch, os.devnull], read, listed)
        os.write(report_fd, (json.dumps(layers) + "\n").encode())
        os.close(report_fd)
    except BaseException as exc:  # report and die: the grader records an infrastructure error
        os.write(report_fd, (json.dumps({"error": repr(exc)}) + "\n").encode())
        os._exit(70)
    os.environ.clear()
    os.environ.update(request["env"])
    os.makedirs(os.path.join(policy.scratch, ".kernel"), exist_ok=True)
    log = os.open(os.path.join(policy.scratch, ".kernel", "stderr.log"),
                  os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(log, 2)
    # A fork shares the zygote's random state: reseed like a fresh process would be.
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        torch.seed()
        torch.set_num_threads(int(request.get("threads", 1)))
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _worker_main(request: dict, policy: SandboxPolicy, report_fd: int) -> None:
    """In K: confine this process, then serve the harness as a function worker."""
    _confine(request, policy, report_fd, worker=True)
    _sibling("worker").main(request["socket"])
    os._exit(0)


def _kernel_main(request: dict, policy: SandboxPolicy, report_fd: int) -> None:
    """In K: confine this process, then become an IPython kernel (never returns)."""
    _confine(request, policy, report_fd, worker=False)
    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance()
    # no parent poller: K's parent is the namespace's init, whose pid is 1 inside
    app.initialize(["-f", request["connection_file"], "--HistoryManager.hist_file=:memory:"])
    app.start()
    os._exit(0)


def _init_main(request: dict, policy: SandboxPolicy, report_fd: int) -> None:
    """In I: start K, forward interrupts to it, reap children, exit when K exits."""
    os.setsid()
    kernel = os.fork()
    if kernel == 0:
        try:
            (_worker_main if _WORKER else _kernel_main)(request, policy, report_fd)
        finally:  # never return into the zygote's frames
            os._exit(70)
    os.close(report_fd)

    def _forward(signum, _frame):
        try:
            os.kill(kernel, signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGINT, _forward)
    signal.signal(signal.SIGTERM, _forward)
    while True:
        try:
            pid, _status = os.wait()
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue
        if pid == kernel:
            os._exit(0)


def _spawn(request: dict) -> dict:
    """Fork C, which confines itself, forks I (and I forks K); returns I's pid and layers."""
    policy = SandboxPolicy(**{**request["policy"], "read_only": tuple(
        request["policy"].get("read_only", ()))})
    pid_r, pid_w = os.pipe()
    rep_r, rep_w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(pid_r)
            os.close(rep_r)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            uid = _sb.drop_privileges(policy.user)
            names = _sb.unshare_namespaces() if policy.namespaces else []
            init = os.fork()
            if init == 0:
                try:
                    os.close(pid_w)
                    _init_main(request, policy, rep_w)
                finally:
                    os._exit(70)
            os.write(pid_w, (json.dumps({"pid": init, "uid": uid, "namespaces": names})
                             + "\n").encode())
        except BaseException as exc:
            os.write(pid_w, (json.dumps({"error": repr(exc)}) + "\n").encode())
        os._exit(0)
    os.close(pid_w)
    os.close(rep_w)
    with os.fdopen(pid_r) as fh:
        answer = json.loads(fh.readline() or '{"error": "sandbox setup died"}')
    with os.fdopen(rep_r) as fh:
        line = fh.readline()
    kernel_layers = json.loads(line) if line else {"error": "kernel died during setup"}
    if "error" in kernel_layers:
        answer.setdefault("error", kernel_layers["error"])
    answer["layers"] = {"uid": answer.pop("uid", None),
                        "namespaces": answer.pop("namespaces", []),
                        "landlock_abi": kernel_layers.get("landlock_abi", 0)}
    return answer


_WORKER = False


def main(argv: list[str] | None = None) -> None:
    global _WORKER
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        _WORKER, argv = True, argv[1:]
    # Started by path with `python -I`: neither the working folder (the parent of all
    # scratch folders) nor this folder is on sys.path (see sandbox.read_only_paths).
    if sys.path and sys.path[0] in ("", os.getcwd(), _HERE):
        sys.path.pop(0)
    for name in argv:  # the modules to pre-import, e.g. numpy torch
        if _WORKER and name.split(".")[0] == "course_lib":
            continue  # never in a worker: its processes must not hold the references
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing optional module only costs speed
            print(f"zygote: could not pre-import {name}: {exc!r}", file=sys.stderr)
    if _WORKER:
        _sibling("worker")
    else:
        import ipykernel.kernelapp  # noqa: F401  (the expensive part of starting a kernel)

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # C processes are reaped automatically
    # If the worker dies (Ctrl-C, crash), take every kernel this zygote started with it.
    inits: list[int] = []

    def _cleanup(*_args):
        for pid in inits:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, _cleanup)
    _sb._LIBC.prctl(_sb._PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    out = sys.stdout
    ready = {"ready": True, "landlock_abi": _sb.landlock_abi(), "pid": os.getpid(),
             "course_lib_loaded": any(m.split(".")[0] == "course_lib" for m in sys.modules)}
    out.write(json.dumps(ready) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = _spawn(json.loads(line))
            if "pid" in answer:
                inits[:] = [p for p in inits if os.path.exists(f"/proc/{p}")]
                inits.append(answer["pid"])
        except Exception as exc:
            answer = {"error": repr(exc)}
        out.write(json.dumps(answer) + "\n")
        out.flush()
    _cleanup()


if __name__ == "__main__":
    main()
