"""emdet.utils.atomic: the one helper every emdet writer uses."""
from __future__ import annotations

import multiprocessing as mp
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from emdet.utils import atomic
from emdet.utils.atomic import (
    TEMP_SUFFIX,
    atomic_open,
    atomic_write,
    atomic_write_many,
    clean_stale_temps,
    is_temp_file,
)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(TEMP_SUFFIX))


def test_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "a.json"
    atomic_write(target, '{"a": 1}')
    assert target.read_text() == '{"a": 1}'
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert _leftovers(target.parent) == []


def test_error_inside_block_keeps_old_content_and_removes_temp(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as f:
        f.write("half of the new")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_a_folder_as_target_is_a_clear_error(tmp_path):
    (tmp_path / "out.json").mkdir()
    with pytest.raises(IsADirectoryError, match="out.json is a folder"):
        atomic_write(tmp_path / "out.json", "x")


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_mode_follows_the_umask_like_open(tmp_path, umask, mode):
    code = (f"import os; os.umask({umask}); from emdet.utils.atomic import atomic_write; "
            f"atomic_write({str(tmp_path / 'f.csv')!r}, 'x'); "
            f"open({str(tmp_path / 'plain.csv')!r}, 'w').close()")
    subprocess.run([sys.executable, "-c", code], check=True)
    got = stat.S_IMODE((tmp_path / "f.csv").stat().st_mode)
    plain = stat.S_IMODE((tmp_path / "plain.csv").stat().st_mode)
    assert got == plain == mode


def _hammer(target: str, tag: str, n: int) -> None:
    for i in range(n):
        atomic_write(target, f"{tag}-{i}\n" * 2000)


def test_two_processes_and_threads_writing_one_target_never_collide(tmp_path):
    """The tuning workers' race: fixed temp names made one writer rename the other's file."""
    target = str(tmp_path / "metric_vs_trial.png")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_hammer, args=(target, f"p{k}", 150)) for k in range(2)]
    threads = [threading.Thread(target=_hammer, args=(target, f"t{k}", 150)) for k in range(2)]
    for w in procs + threads:
        w.start()
    for w in procs + threads:
        w.join()
    assert all(p.exitcode == 0 for p in procs)
    lines = set(Path(target).read_text().splitlines())
    assert len(lines) == 1  # one complete write, never a mix of two
    assert _leftovers(tmp_path) == []


def test_many_is_all_or_nothing_when_a_rename_fails(tmp_path, monkeypatch):
    a, b, c = (tmp_path / n for n in ("all.json", "train.json", "val.json"))
    a.write_text("old all")
    b.write_text("old train")  # c does not exist yet
    real_replace = os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 3:  # the third target's rename fails (e.g. quota, NFS hiccup)
            raise OSError("simulated failure")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        atomic_write_many([(a, "new all"), (b, "new train"), (c, "new val")])
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert a.read_text() == "old all" and b.read_text() == "old train" and not c.exists()
    assert _leftovers(tmp_path) == []
    atomic_write_many([(a, "new all"), (b, "new train"), (c, "new val")])
    assert [p.read_text() for p in (a, b, c)] == ["new all", "new train", "new val"]


def test_many_leaves_no_backup_when_an_existing_targets_rename_fails(tmp_path, monkeypatch):
    # the failing rename is onto a file that exists: its backup is a hard link to it, which a
    # rename back onto it would not remove
    a, b = tmp_path / "all.json", tmp_path / "train.json"
    a.write_text("old all")
    b.write_text("old train")
    real_replace = os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("simulated failure")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        atomic_write_many([(a, "new all"), (b, "new train")])
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert a.read_text() == "old all" and b.read_text() == "old train"
    assert _leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.json", "train.json"]


def test_many_writes_nothing_if_one_target_is_a_folder(tmp_path):
    (tmp_path / "val.json").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic_write_many([(tmp_path / "all.json", "x"), (tmp_path / "val.json", "y")])
    assert not (tmp_path / "all.json").exists()
    assert _leftovers(tmp_path) == []


def test_stale_temps_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    host = atomic._HOST
    stale = tmp_path / f".model_0000099.pth.{host}-{dead_pid}-abcd1234{TEMP_SUFFIX}"
    live = tmp_path / f".model_0000199.pth.{host}-{os.getpid()}-abcd1234{TEMP_SUFFIX}"
    other_host = tmp_path / f".model.pth.otherhost-{dead_pid}-abcd1234{TEMP_SUFFIX}"
    unrelated = tmp_path / "notes.emdet-tmp.txt"
    for p in (stale, live, other_host, unrelated):
        p.write_bytes(b"partial")
    assert is_temp_file(stale) and not is_temp_file(unrelated)
    assert clean_stale_temps(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other_host.exists() and unrelated.exists()


def test_checkpointer_removes_what_a_killed_save_left(tmp_path):
    import torch

    from emdet.engine.checkpoint import AtomicCheckpointer

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = tmp_path / f".model_0000009.pth.{atomic._HOST}-{int(dead.stdout)}-00ff00ff{TEMP_SUFFIX}"
    stale.write_bytes(b"half a checkpoint")
    ckpt = AtomicCheckpointer(torch.nn.Linear(2, 2), save_dir=str(tmp_path))
    assert not stale.exists()
    ckpt.save("model_0000019")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000019.pth"]
