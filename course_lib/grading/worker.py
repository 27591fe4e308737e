"""The sandboxed function worker: defines the student's functions and answers calls.

Runs in a process forked from a worker zygote (``zygote.py --worker``) that never imported
``course_lib``: this file is loaded by path and imports only the standard library (and
torch or numpy, when a value is one of theirs). The trusted harness (:mod:`.harness`)
connects over a unix socket and sends, one at a time:

* ``{"op": "exec", "id", "code", "name"}``: run a cell's code in the student namespace;
  answers ``{"id", "ok": true}`` or ``{"id", "ok": false, "error": "Type: message"}``;
* ``{"op": "call", "id", "fn", "args", "kwargs", "grad"}``: call a student function on
  inputs encoded by :func:`encode` (tensors, numbers, lists, environment handles); while
  it runs, each use of an environment handle (``env.pull(arms)``, ``source.draw(n)``)
  sends ``{"id", "op": "env", "env", "method", "args"}`` and waits for the harness's
  answer; the call ends with ``{"id", "op": "result", "value", "grad", "grad_error"}`` or
  ``{"id", "op": "raised", "type", "message"}``.

Everything this process sends is untrusted: once the student's code ran, it may have
replaced any of this. The harness validates every message (size, type, shape,
finiteness) and compares results on its side; nothing here knows an expected value.
Frames are a 4-byte big-endian length and UTF-8 JSON (NaN and Infinity allowed).
"""

from __future__ import annotations

import builtins
import json
import socket
import struct
import sys

MAX_MESSAGE = 16 * 1024 * 1024  # bytes of one frame
MAX_NUMBERS = 2_000_000  # numbers in one encoded value
MAX_DEPTH = 8
MAX_TEXT = 2_000


class ProtocolError(Exception):
    """A frame that is too large, not JSON, or cut short."""


def send(sock: socket.socket, obj: object) -> None:
    data = json.dumps(obj, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        data = json.dumps({"id": obj.get("id") if isinstance(obj, dict) else None,
                           "op": "raised", "type": "ValueError",
                           "message": "the value is too large to send"}).encode()
    sock.sendall(struct.pack(">I", len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the channel")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv(sock: socket.socket, limit: int = MAX_MESSAGE) -> object:
    (size,) = struct.unpack(">I", _recv_exact(sock, 4))
    if size > limit:
        raise ProtocolError(f"a message of {size} bytes (the limit is {limit})")
    try:
        return json.loads(_recv_exact(sock, size).decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"not a JSON message ({type(exc).__name__})") from None


# --------------------------------------------------------------------------- values
def encode(value: object, _depth: int = 0, _count: list | None = None) -> dict:
    """A value as plain JSON data: ``{"t": kind, ...}`` (see the module docstring).

    Tensors and arrays become ``{"t": "tensor", "dtype", "shape", "v": flat list,
    "requires_grad"}``; anything else that is not a number, string, list or None becomes
    ``{"t": "object", "type": name}``. Sizes are bounded (:data:`MAX_NUMBERS`).
    """
    count = _count if _count is not None else [0]
    if _depth > MAX_DEPTH:
        return {"t": "object", "type": "too deeply nested"}
    if value is None:
        return {"t": "none"}
    if isinstance(value, bool):
        return {"t": "bool", "v": bool(value)}
    if isinstance(value, int):
        count[0] += 1
        return {"t": "int", "v": int(value)} if abs(value) < 2**53 else \
            {"t": "float", "v": float(value)}
    if isinstance(value, float):
        count[0] += 1
        return {"t": "float", "v": float(value)}
    if isinstance(value, str):
        return {"t": "str", "v": value[:MAX_TEXT]}
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        t = value.detach()
        if t.is_complex() or t.numel() + count[0] > MAX_NUMBERS:
            return {"t": "object", "type": f"tensor of {t.numel()} {t.dtype} values"}
        count[0] += t.numel()
        return {"t": "tensor", "dtype": str(t.dtype).replace("torch.", ""),
                "shape": list(t.shape), "v": t.reshape(-1).tolist(),
                "requires_grad": bool(value.requires_grad)}
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, (np.ndarray, np.generic)):
        a = np.asarray(value)
        if a.dtype.kind not in "biuf" or a.size + count[0] > MAX_NUMBERS:
            return {"t": "object", "type": f"numpy array of dtype {a.dtype}"}
        count[0] += a.size
        return {"t": "tensor", "dtype": str(a.dtype), "shape": list(a.shape),
                "v": a.reshape(-1).tolist(), "requires_grad": False, "numpy": True}
    if isinstance(value, (list, tuple)):
        if len(value) + count[0] > MAX_NUMBERS:
            return {"t": "object", "type": f"{type(value).__name__} of {len(value)} items"}
        return {"t": "list" if isinstance(value, list) else "tuple",
                "v": [encode(v, _depth + 1, count) for v in value]}
    return {"t": "object", "type": type(value).__name__[:100]}


class _Env:
    """Stands for an environment that lives in the harness (pulls only, see bandit.py)."""

    def __init__(self, channel: _Channel, index: int, spec: dict):
        self._channel, self._index = channel, index
        for name in ("n_arms", "budget"):
            if name in spec:
                setattr(self, name, spec[name])

    def _ask(self, method: str, *args: object) -> object:
        return self._channel.ask(self._index, method, [encode(a) for a in args])

    def pull(self, arms):
        """Rewards (n,) float 0/1 for the arm indices ``arms`` (n,)."""
        return self._ask("pull", arms)

    def draw(self, n):
        """n binary rewards (float 0/1)."""
        return self._ask("draw", n)

    def __repr__(self) -> str:
        return "<environment: pulls are answered by the grader>"


def decode(obj: dict, envs: list) -> object:
    """An input sent by the harness, as the student's function receives it."""
    kind = obj["t"]
    if kind in ("int", "float", "bool", "str"):
        return obj["v"]
    if kind == "none":
        return None
    if kind in ("list", "tuple"):
        items = [decode(v, envs) for v in obj["v"]]
        return items if kind == "list" else tuple(items)
    if kind == "tensor":
        import torch

        t = torch.tensor(obj["v"], dtype=getattr(torch, obj["dtype"])).reshape(obj["shape"])
        return t.requires_grad_(True) if obj.get("requires_grad") else t
    if kind == "env":
        return envs[obj["index"]]
    raise ValueError(f"cannot decode {kind!r}")


def _as_tensor(value: object):
    if isinstance(value, dict) and value.get("t") == "tensor":
        return decode(value, [])
    if isinstance(value, dict) and value.get("t") in ("int", "float"):
        return value["v"]
    raise ValueError("the grader answered with an unexpected value")


class _Channel:
    """The worker's end of the socket, and the call it is answering."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.call_id: str | None = None

    def ask(self, index: int, method: str, args: list) -> object:
        send(self.sock, {"id": self.call_id, "op": "env", "env": index, "method": method,
                         "args": args})
        answer = recv(self.sock)
        if not answer.get("ok"):
            raise ValueError(str(answer.get("error", "the environment refused")))
        return _as_tensor(answer["value"])


def _describe(exc: BaseException) -> dict:
    try:
        text = str(exc)[:MAX_TEXT]
    except BaseException:
        text = ""
    return {"type": type(exc).__name__[:100], "message": text}


def call_function(namespace: dict, request: dict, envs: list) -> dict:
    """Call ``namespace[request["fn"]]`` on the decoded inputs; the answer as data (the
    same in the worker and in a notebook's own test cells)."""
    fn = namespace.get(request["fn"])
    if fn is None:
        return {"op": "raised", "type": "NameError",
                "message": f"name {request['fn']!r} is not defined"}
    try:
        args = [decode(a, envs) for a in request.get("args", [])]
        kwargs = {k: decode(v, envs) for k, v in request.get("kwargs", {}).items()}
        value = fn(*args, **kwargs)
        answer = {"op": "result", "value": encode(value), "grad": None, "grad_error": None}
    except BaseException as exc:  # the student's function failed: say how
        return {"op": "raised", **_describe(exc)}
    grad_of = request.get("grad")
    if grad_of is not None:
        try:
            import torch

            (g,) = torch.autograd.grad(value, args[grad_of], allow_unused=True)
            answer["grad"] = encode(g)
        except BaseException as exc:
            answer["grad_error"] = type(exc).__name__[:100]
    return answer


def serve(sock: socket.socket) -> None:
    """Answer the harness's requests until it says exit or closes the channel."""
    channel = _Channel(sock)
    namespace: dict = {"__name__": "__main__", "__builtins__": builtins}
    while True:
        try:
            request = recv(sock)
        except KeyboardInterrupt:
            continue
        except (EOFError, OSError, ProtocolError):
            return
        op, rid = request.get("op"), request.get("id")
        channel.call_id = rid
        try:
            if op == "exit":
                return
            if op == "exec":
                try:
                    code = compile(request["code"], request.get("name", "<cell>"), "exec")
                    exec(code, namespace)
                    answer = {"ok": True}
                except BaseException as exc:
                    d = _describe(exc)
                    answer = {"ok": False, "error": f"{d['type']}: {d['message']}"}
            elif op == "call":
                envs = [_Env(channel, i, spec) for i, spec in enumerate(request.get("envs", []))]
                answer = call_function(namespace, request, envs)
            else:
                answer = {"op": "raised", "type": "ValueError", "message": f"unknown {op!r}"}
            send(sock, {"id": rid, **answer})
        except KeyboardInterrupt:  # the harness interrupted a call that took too long
            try:
                send(sock, {"id": rid, "op": "raised", "ok": False, "type":
                            "KeyboardInterrupt", "error": "KeyboardInterrupt",
                            "message": "interrupted"})
            except OSError:
                return
        except (EOFError, OSError, ProtocolError):
            return


def main(socket_path: str) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(socket_path)
    serve(sock)
