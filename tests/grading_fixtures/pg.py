"""Start a throwaway PostgreSQL server on 127.0.0.1 (for tests and the grading benchmark).

Uses Debian's server binaries (``apt-get install postgresql``); as root the server runs as
the ``postgres`` user, which PostgreSQL requires.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile


class PostgresUnavailable(RuntimeError):
    """The binaries or the unprivileged user are missing (the message says which)."""


def pg_bindir() -> str | None:
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(versions[-1]) if versions else None


class Postgres:
    def __init__(self, bindir: str, base: str, port: int, prefix: list[str]):
        self.bindir, self.base, self.port, self.prefix = bindir, base, port, prefix

    def _run(self, *args: str) -> None:
        subprocess.run([*self.prefix, *args], check=True, capture_output=True, text=True)

    def new_database(self, name: str) -> str:
        """Create database ``name``; returns its SQLAlchemy URL (psycopg2 driver)."""
        self._run(f"{self.bindir}/createdb", "-h", "127.0.0.1", "-p", str(self.port),
                  "-U", "grader", name)
        return f"postgresql+psycopg2://grader@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run([*self.prefix, f"{self.bindir}/pg_ctl", "-D",
                        os.path.join(self.base, "data"), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


def start_postgres() -> Postgres:
    bindir = pg_bindir()
    if bindir is None:
        raise PostgresUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not installed: "
                                  "apt-get install -y postgresql")
    base = tempfile.mkdtemp(prefix="grading-pg-")
    prefix: list[str] = []
    if os.getuid() == 0:  # postgres refuses to run as root
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base)
            raise PostgresUnavailable("running as root and there is no 'postgres' user") \
                from None
        os.chown(base, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pg = Postgres(bindir, base, port, prefix)
    data = os.path.join(base, "data")
    try:
        pg._run(f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "grader", "--no-sync")
        pg._run(f"{bindir}/pg_ctl", "-D", data, "-l", f"{base}/log", "-w", "-o",
                f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off -c max_connections=200",
                "start")
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(base, ignore_errors=True)
        raise PostgresUnavailable(f"could not start PostgreSQL: {exc.stderr}") from None
    return pg
