"""A throwaway PostgreSQL server for the shared-study tests (``postgres_url``).

The server binaries are looked up on PATH and in the Debian/RHEL install folders
(``/usr/lib/postgresql/<version>/bin``, ``/usr/pgsql-<version>/bin``); without them the tests
that need the server are skipped, or fail when ``EMDET_REQUIRE_POSTGRES=1`` (CI installs the
``postgresql`` package and sets it). Run as root, the server runs as the ``postgres`` user.
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from emdet.tuning._process import die_with_parent_hook

PG_USER = "emdet"


def _unavailable(reason: str):
    if os.environ.get("EMDET_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"EMDET_REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(reason)


def find_pg_bin() -> Path | None:
    """The folder holding ``initdb`` and ``postgres`` (the newest version), or None."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb") + glob.glob("/usr/pgsql-*/bin/initdb")

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path))

    return Path(max(found, key=version)).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    port: int
    folder: Path

    def connect(self, dbname: str = "postgres"):
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.port, user=PG_USER, dbname=dbname,
                                connect_timeout=5)

    def url(self, dbname: str) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{dbname}"


def _wait_ready(server: PostgresServer, proc: subprocess.Popen, log: Path) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            server.connect().close()
            return True
        except Exception:  # not accepting connections yet
            time.sleep(0.2)
    raise RuntimeError(f"PostgreSQL did not accept connections within 60 s; see {log}")


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server on 127.0.0.1 in a temporary folder, trust auth, user ``emdet``."""
    bindir = find_pg_bin()
    if bindir is None or not (bindir / "postgres").is_file():
        _unavailable("no PostgreSQL server binaries (initdb, postgres) on PATH or in "
                     "/usr/lib/postgresql/*/bin; install the postgresql package")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _unavailable("psycopg2 is not installed; pip install -e .[postgres]")
    as_user: dict = {}
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no 'postgres' user to run the server as")
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    # Not pytest's tmp_path: its parents are private to root, and the socket path must be short.
    folder = Path(tempfile.mkdtemp(prefix="emdet-pg-"))
    if as_user:
        os.chown(folder, as_user["user"], as_user["group"])
    data, log = folder / "data", folder / "server.log"
    env = dict(os.environ, LC_ALL="C", LANG="C")
    init = subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", PG_USER,
                           "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"],
                          env=env, capture_output=True, text=True, **as_user)
    if init.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"initdb failed:\n{init.stdout[-2000:]}{init.stderr[-2000:]}")
    proc = server = None
    for _ in range(3):  # the free port can be taken before the server binds it
        server = PostgresServer(_free_port(), folder)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(data), "-p", str(server.port),
                 "-k", str(folder), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                 "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                env=env, stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent_hook(), **as_user)
        if _wait_ready(server, proc, log):
            break
    else:
        text = log.read_text(errors="replace")[-3000:]
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start:\n{text}")
    try:
        yield server
    finally:
        proc.send_signal(signal.SIGINT)  # fast shutdown
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """URL of a new, empty database on the session's server (dropped afterwards)."""
    name = f"emdet_{secrets.token_hex(4)}"
    conn = postgres_server.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    yield postgres_server.url(name)
    with contextlib.closing(postgres_server.connect()) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
