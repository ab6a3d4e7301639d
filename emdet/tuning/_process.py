"""Trial processes that never outlive their tuner, and which worker runs which trial.

* :func:`run_child` starts a trial's training so that it dies with the tuner: on Linux the child
  asks the kernel for ``SIGKILL`` when its parent dies (``prctl(PR_SET_PDEATHSIG)``), which also
  covers ``kill -9`` of the tuner; an exception in the tuner (``KeyboardInterrupt``, a
  ``SIGTERM`` turned into one by ``tools/tune_net.py``) terminates the child and waits for it.
* :func:`worker_token` names this process (``host:pid:start``) in each trial's user attributes;
  :func:`is_dead_local_worker` tells a restarted tuner that a trial left ``RUNNING`` belongs to a
  process of this machine that no longer runs, so the trial can be marked failed at once.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

__all__ = ["is_dead_local_worker", "run_child", "worker_token"]

_PR_SET_PDEATHSIG = 1
HOST = socket.gethostname()


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _load_prctl()  # looked up here, not in the forked child


def die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get ``SIGKILL`` when this process dies (Linux).

    The parent can die between ``fork`` and ``prctl``; then the child is already orphaned and the
    kernel never sends the signal, so it checks its parent id after asking and kills itself.
    The kernel sends the signal when the starting *thread* ends: start children from a thread
    that lives as long as they should (``run_study`` runs trials in the calling thread).
    """
    if _PRCTL is None:
        return None
    parent = os.getpid()
    prctl = _PRCTL

    def start() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return start


def stop_child(proc: subprocess.Popen, *, timeout: float = 10.0) -> None:
    """``SIGTERM``, wait up to ``timeout`` seconds, then ``SIGKILL``; returns once it is reaped."""
    try:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
    finally:  # even if a second Ctrl-C arrives while waiting
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()


def run_child(cmd: Sequence[str], *, env: dict, log: IO[Any], timeout: float = 10.0) -> int:
    """Run ``cmd`` with output to ``log``, tied to this process's life; return its exit code."""
    proc = subprocess.Popen(list(cmd), env=env, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=die_with_parent_hook())
    try:
        return proc.wait()
    except BaseException:
        stop_child(proc, timeout=timeout)
        raise


def _stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def _start_time(pid: int) -> str:
    fields = _stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else ""


def worker_token(pid: int | None = None) -> str:
    """``host:pid:start`` of a process (start: clock ticks since boot, empty off Linux)."""
    pid = os.getpid() if pid is None else pid
    return f"{HOST}:{pid}:{_start_time(pid)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    fields = _stat(pid)
    return fields is None or fields[0] not in ("Z", "X")  # a zombie has stopped running


def is_dead_local_worker(token: object) -> bool:
    """Whether ``token`` (from :func:`worker_token`) names a process of this host that has ended.

    A token of another host, or not a token at all, is never called dead here (Optuna's
    heartbeat fails those trials). A pid now used by another process (its start time differs),
    or this very process's pid inherited from a killed container, counts as dead.
    """
    if not isinstance(token, str) or token.count(":") < 2:
        return False
    host, pid_text, start = token.rsplit(":", 2)
    if host != HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return start != _start_time(pid)
    if not _pid_alive(pid):
        return True
    return bool(start) and _start_time(pid) not in ("", start)
