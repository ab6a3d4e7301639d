"""Atomic file output: every file emdet writes appears complete or not at all.

One helper for every writer (COCO files, CSV tables, checkpoints, overlays, reports, TIFFs):

* the data go to a temporary file **in the target's folder** (so the final ``os.replace`` is a
  rename on one file system), named ``.<name>.<host>-<pid>-<random>.emdet-tmp``: unique, so two
  processes writing the same target (two tuning workers sharing an output folder) never touch
  each other's temporary file, and traceable, so :func:`clean_stale_temps` can remove the ones
  left by a process that was killed (``kill -9``) mid-write;
* the file is flushed and ``fsync``-ed before the rename, so a crash right after cannot leave an
  empty file under the final name;
* the final file gets the mode an ordinary ``open(path, "w")`` would give it (``0o666`` minus the
  umask), not ``mkstemp``'s private ``0o600``, so colleagues sharing a folder can read results;
* :func:`atomic_write_many` writes several files all-or-nothing: every temporary file is written
  first; the renames only start when all exist, and if one rename fails the targets already
  replaced are put back as they were.

Examples
--------
>>> atomic_write("out/summary.csv", df.to_csv(index=False))          # doctest: +SKIP
>>> with atomic_open("out/model.pth", "wb") as f:                      # doctest: +SKIP
...     torch.save(state, f)
>>> atomic_write_many([("all.json", a), ("train.json", b)])           # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import socket
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = [
    "TEMP_SUFFIX",
    "atomic_open",
    "atomic_write",
    "atomic_write_many",
    "clean_stale_temps",
    "default_file_mode",
    "is_temp_file",
]

PathLike = str | os.PathLike

#: Every temporary file made here ends with this; globbing and cleaning rely on it.
TEMP_SUFFIX = ".emdet-tmp"
_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:40] or "host"
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[0-9a-f]+"
                      + re.escape(TEMP_SUFFIX) + "$")
_umask_lock = threading.Lock()


def default_file_mode() -> int:
    """``0o666`` minus the process umask: the mode ``open(path, "w")`` gives a new file."""
    try:  # Linux >= 4.7 reports the umask without changing it (os.umask is not thread-safe)
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def is_temp_file(path: PathLike) -> bool:
    """True for a temporary file of this module (``.<name>.<host>-<pid>-<hex>.emdet-tmp``)."""
    return _TEMP_RE.match(Path(path).name) is not None


def _temp_path(target: Path) -> Path:
    token = secrets.token_hex(4)
    return target.with_name(f".{target.name}.{_HOST}-{os.getpid()}-{token}{TEMP_SUFFIX}")


def _open_new(path: Path, binary: bool, encoding: str | None, newline: str | None) -> IO[Any]:
    # "x": created here or an error, never someone else's file; ``name`` stays the path, which
    # writers such as tifffile need.
    if binary:
        return open(path, "xb")  # noqa: SIM115 - closed by the callers
    return open(path, "x", encoding=encoding or "utf-8", newline=newline)  # noqa: SIM115


def _check_target(target: Path) -> None:
    if target.is_dir():
        raise IsADirectoryError(
            errno.EISDIR, f"{target} is a folder; give the path of a file to write", str(target)
        )


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not possible on every platform / file system
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _prepare(target: PathLike) -> tuple[Path, Path]:
    path = Path(target)
    _check_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, _temp_path(path)


def _finish_temp(tmp: Path, handle: IO[Any]) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    os.chmod(tmp, default_file_mode())


@contextlib.contextmanager
def atomic_open(
    path: PathLike, mode: str = "w", *, encoding: str | None = "utf-8", newline: str | None = None
) -> Iterator[IO[Any]]:
    """Open a temporary file that replaces ``path`` when the ``with`` block ends without error.

    Parameters
    ----------
    path : str or PathLike
        The final file. Its folder is created if needed; a folder of that name is an error.
    mode : {"w", "wb"}
        Text (``encoding``, ``newline`` apply) or binary.

    On an exception inside the block the temporary file is removed and ``path`` is untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    target, tmp = _prepare(path)
    handle = _open_new(tmp, mode == "wb", encoding, newline)
    try:
        yield handle
        _finish_temp(tmp, handle)
        os.replace(tmp, target)
    except BaseException:
        handle.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def atomic_write(path: PathLike, data: bytes | str, *, encoding: str = "utf-8") -> Path:
    """Write ``data`` (bytes, or text in ``encoding``) to ``path`` atomically; return the path."""
    with atomic_open(path, "wb") as f:
        f.write(data.encode(encoding) if isinstance(data, str) else data)
    return Path(path)


def atomic_write_many(files: Sequence[tuple[PathLike, bytes | str]]) -> list[Path]:
    """Write several files all-or-nothing.

    Every file is first written to its temporary file; only when all are complete are they
    renamed over their targets. If a rename fails, the targets replaced so far get their old
    content back (or are removed if they did not exist), so the folder is as before.
    """
    prepared: list[tuple[Path, Path]] = []
    backups: list[tuple[Path, Path | None]] = []
    targets = [Path(p) for p, _ in files]
    if len({t.resolve() for t in targets}) != len(targets):
        raise ValueError(f"atomic_write_many: the same file is named twice in {targets}")
    try:
        for (target_like, data), target in zip(files, targets, strict=True):
            target, tmp = _prepare(target_like)
            handle = _open_new(tmp, True, None, None)
            prepared.append((target, tmp))
            try:
                handle.write(data.encode("utf-8") if isinstance(data, str) else data)
                _finish_temp(tmp, handle)
            finally:
                handle.close()
        for target, tmp in prepared:
            backup: Path | None = None
            if target.exists():
                backup = _temp_path(target)
                try:  # the old content stays reachable until all are done
                    os.link(target, backup)
                except OSError:  # a file system without hard links
                    shutil.copy2(target, backup)
            try:
                os.replace(tmp, target)
            except BaseException:
                # this target is unchanged; its backup is a second name of the same file (a
                # rename onto it would be a no-op and leave the backup behind)
                if backup is not None:
                    with contextlib.suppress(OSError):
                        backup.unlink()
                raise
            backups.append((target, backup))
    except BaseException:
        for target, backup in reversed(backups):
            with contextlib.suppress(OSError):
                if backup is not None:
                    os.replace(backup, target)
                else:
                    target.unlink()
        for _, tmp in prepared:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
    for _, backup in backups:
        if backup is not None:
            with contextlib.suppress(FileNotFoundError):
                backup.unlink()
    for folder in {t.parent for t in targets}:
        _fsync_dir(folder)
    return targets


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def clean_stale_temps(folder: PathLike, *, recursive: bool = False) -> list[Path]:
    """Remove temporary files left in ``folder`` by processes of this host that no longer run.

    A temporary file of a live process, or of another host (a shared network folder), is kept.
    Returns the removed paths.
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    removed: list[Path] = []
    candidates = root.rglob(f"*{TEMP_SUFFIX}") if recursive else root.glob(f"*{TEMP_SUFFIX}")
    for path in candidates:
        match = _TEMP_RE.match(path.name)
        if match is None or match["host"] != _HOST:
            continue
        pid = int(match["pid"])
        if pid != os.getpid() and not _pid_alive(pid):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed
