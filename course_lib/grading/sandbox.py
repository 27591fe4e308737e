"""Confinement of one grading kernel on a plain Linux machine (no container, no root needed).

Every layer is optional and detected at run time; each zygote reports the layers it
applied, and the grading summary prints them. See ``docs/grading.md`` for what
each layer does and does not stop.

Layers, applied in the process tree ``zygote -> C -> I -> K`` built by :mod:`.zygote`:

* **C** (short-lived): drops root to an unprivileged user (``nobody``) when started as
  root, then ``unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID)``: a new network
  namespace has no interface except a down loopback (no network at all, UDP included);
  the new PID namespace makes the next child its init.
* **I** (init of the PID namespace): forwards SIGINT to the kernel and reaps children.
  Killing I tears the namespace down, which kills every process the student started.
* **K** (the IPython kernel): resource limits (address space, file size, no core dumps,
  CPU-time backstop) and a Landlock ruleset: read-only access to the Python installation
  and the few system paths a kernel needs, read-write access to its scratch folder only,
  no TCP bind/connect, no signals to processes outside the sandbox (Landlock ABI >= 6).
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import sys
from dataclasses import dataclass, field

_LIBC = ctypes.CDLL(None, use_errno=True)

# x86_64 and aarch64 share the Landlock syscall numbers (added after the syscall tables merged).
_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_PDEATHSIG = 1

# Filesystem access rights, by the Landlock ABI version that introduced them.
_FS_EXECUTE = 1 << 0
_FS_WRITE_FILE = 1 << 1
_FS_READ_FILE = 1 << 2
_FS_READ_DIR = 1 << 3
_FS_ABI1_ALL = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
_FS_REFER = 1 << 13  # ABI 2
_FS_TRUNCATE = 1 << 14  # ABI 3
_FS_IOCTL_DEV = 1 << 15  # ABI 5
_NET_BIND_TCP = 1 << 0  # ABI 4
_NET_CONNECT_TCP = 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
_SCOPE_SIGNAL = 1 << 1  # ABI 6

CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


# Paths a Python kernel reads besides the interpreter and its packages. Missing ones are
# skipped. /etc is NOT allowed as a whole (it may hold credentials); /proc only for the
# kernel itself, so other processes' command lines and environments stay unreadable.
SYSTEM_READ_PATHS = (
    "/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin",
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
    "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/fonts", "/etc/mime.types",
    "/etc/timezone", "/etc/os-release", "/etc/matplotlibrc",
    "/dev/null", "/dev/zero", "/dev/urandom", "/dev/random",
    "/proc/self", "/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/proc/loadavg",
    "/proc/filesystems", "/sys/devices/system/cpu", "/sys/fs/cgroup",
)


@dataclass(frozen=True)
class SandboxPolicy:
    """What one grading kernel may do. Built by the grader, applied in the kernel's process.

    Attributes:
        scratch: the only writable folder; the kernel's working directory and HOME.
        read_only: further folders the kernel may read (interpreter, site-packages,
            installed course packages). Everything else on disk is invisible to it.
        memory_mb: address space the kernel may add to what the pre-imported zygote
            already mapped (``RLIMIT_AS``); a memory bomb hits ``MemoryError`` instead of
            the machine's OOM killer.
        file_size_mb: largest file the kernel may write (``RLIMIT_FSIZE``).
        cpu_seconds: CPU-time backstop for the whole kernel (``RLIMIT_CPU``); the wall-clock
            cell timeout normally fires first.
        user: unprivileged user to run as when the grader runs as root (``None``: keep uid).
        landlock: use Landlock when the kernel offers it.
        namespaces: use user/network/PID namespaces when unprivileged ones are allowed.
    """

    scratch: str
    read_only: tuple[str, ...] = field(default_factory=tuple)
    memory_mb: int = 2048
    file_size_mb: int = 64
    cpu_seconds: int = 1800
    user: str | None = "nobody"
    landlock: bool = True
    namespaces: bool = True


def landlock_abi() -> int:
    """The Landlock ABI version of the running kernel, 0 when Landlock is unavailable."""
    version = _LIBC.syscall(
        _SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
        ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION),
    )
    return max(int(version), 0)


def _handled_fs(abi: int) -> int:
    handled = _FS_ABI1_ALL
    if abi >= 2:
        handled |= _FS_REFER
    if abi >= 3:
        handled |= _FS_TRUNCATE
    if abi >= 5:
        handled |= _FS_IOCTL_DEV
    return handled


def apply_landlock(read_write: list[str], read_only: list[str],
                   list_only: list[str] = ()) -> int:
    """Restrict this process and its future children; returns the ABI used (0: skipped).

    Files get read (and execute) access beneath ``read_only``, full access beneath
    ``read_write``; folders beneath ``list_only`` may be listed but their files not read
    (unless a ``read_only`` rule covers them); TCP bind/connect is denied (ABI >= 4);
    signals and abstract unix sockets cannot reach processes outside the sandbox (ABI >= 6).
    """
    abi = landlock_abi()
    if abi <= 0:
        return 0
    handled = _handled_fs(abi)
    attr = _RulesetAttr(handled, 0, 0)
    size = 8  # ABI 1-3 only know handled_access_fs
    if abi >= 4:
        attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP
        size = 16
    if abi >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL
        size = 24
    ruleset = _LIBC.syscall(
        _SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
        ctypes.c_uint32(0),
    )
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    read_access = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
    file_only = _FS_EXECUTE | _FS_READ_FILE | _FS_WRITE_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
    try:
        for paths, access in ((list_only, _FS_READ_DIR), (read_only, read_access),
                              (read_write, handled)):
            for path in paths:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue
                try:
                    allowed = access
                    if not os.path.isdir(path):  # rules on files may only carry file rights
                        allowed &= file_only
                    allowed &= handled
                    rule = _PathBeneathAttr(allowed, fd)
                    if _LIBC.syscall(
                        _SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset),
                        ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH), ctypes.byref(rule),
                        ctypes.c_uint32(0),
                    ) < 0:
                        raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
                finally:
                    os.close(fd)
        if _LIBC.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if _LIBC.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset),
                         ctypes.c_uint32(0)) < 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)
    return abi


def unshare_namespaces() -> list[str]:
    """Enter new user, network and PID namespaces, as far as the machine allows.

    Returns the names of the namespaces entered (empty when unprivileged namespaces are
    disabled). The current uid/gid are mapped to themselves, so files keep their owner.
    """
    uid, gid = os.getuid(), os.getgid()
    for flags, names in (
        (CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID, ["user", "net", "pid"]),
        (CLONE_NEWUSER | CLONE_NEWNET, ["user", "net"]),
    ):
        if _LIBC.unshare(ctypes.c_int(flags)) == 0:
            with open("/proc/self/setgroups", "w") as fh:
                fh.write("deny")
            with open("/proc/self/uid_map", "w") as fh:
                fh.write(f"{uid} {uid} 1")
            with open("/proc/self/gid_map", "w") as fh:
                fh.write(f"{gid} {gid} 1")
            return names
        if ctypes.get_errno() not in (errno.EPERM, errno.EINVAL, errno.ENOSPC, errno.EUSERS):
            break
    return []


def drop_privileges(user: str | None) -> str | None:
    """Switch to ``user`` when running as root; returns the user switched to, if any."""
    if user is None or os.getuid() != 0:
        return None
    import pwd

    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    return user


def address_space_mb() -> int:
    """Virtual memory this process has mapped now (VmSize), in MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) // 1024
    return 0


def set_limits(policy: SandboxPolicy) -> None:
    """Apply the resource limits of ``policy`` to this process (inherited by children)."""
    mib = 1024 * 1024
    limit_as = (address_space_mb() + policy.memory_mb) * mib
    resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))
    fsize = policy.file_size_mb * mib
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (policy.cpu_seconds, policy.cpu_seconds + 5))


def read_only_paths(extra: tuple[str, ...] = ()) -> list[str]:
    """System paths plus the interpreter, its site-packages and ``extra`` folders."""
    paths = list(SYSTEM_READ_PATHS)
    for path in (sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable),
                 os.path.realpath(sys.executable), *sys.path, *extra):
        if path and os.path.exists(path) and path not in paths:
            paths.append(path)
    return paths


#: Packages a function worker may not read (the reference implementations live there).
WORKER_HIDDEN_PACKAGES = ("course_lib",)


def worker_read_paths(hidden: tuple[str, ...] = WORKER_HIDDEN_PACKAGES
                      ) -> tuple[list[str], list[str]]:
    """Read-only and list-only paths of a function worker: :func:`read_only_paths` minus
    every package named in ``hidden`` (and its ``*.dist-info``, ``__editable__`` files).

    A folder on the read list that holds such a package (site-packages after ``pip
    install .``) is replaced by one rule per entry except the hidden ones, and may itself
    only be listed. course_lib's own folder, which an editable install maps in, is on
    neither list. So ``import course_lib`` fails in the worker, and reading its files too.
    """
    def is_hidden(name: str) -> bool:
        base = name.split("-")[0].split(".")[0].lstrip("_").replace("editable___", "")
        return any(base == h or base.startswith(h + "_") or name.startswith(f"__editable__.{h}")
                   for h in hidden)

    read, listed = [], []
    for path in read_only_paths():
        if any(os.path.basename(path.rstrip(os.sep)) == h for h in hidden):
            continue
        try:
            entries = os.listdir(path) if os.path.isdir(path) else []
        except OSError:
            entries = []
        if any(is_hidden(e) for e in entries):
            listed.append(path)
            read += [os.path.join(path, e) for e in entries if not is_hidden(e)]
        else:
            read.append(path)
    return read, listed
