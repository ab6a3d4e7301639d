"""Helpers shared by the ``bench_*.py`` modules: timing, peak memory, result rows, test data.

Every benchmark module exposes ``run(quick: bool = False) -> list[dict]``; each dict is one row of
the table printed by ``run_all.py`` (keys in :data:`COLUMNS`).

Peak memory is measured in a fresh subprocess that rebuilds the inputs and runs the case once:
on CPU the resident-set high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs`` just
before the call; ``ru_maxrss`` delta where that is not possible) minus the resident set before
the call, on CUDA ``torch.cuda.max_memory_allocated`` minus the memory allocated before.
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

COLUMNS = ["benchmark", "case", "value", "unit", "baseline", "ratio", "peak_mem_MB", "device"]
HERE = Path(__file__).resolve().parent


def best_time(fn: Callable[[], object], *, repeat: int = 5, min_total: float = 0.5) -> float:
    """Smallest wall time of ``fn()`` in seconds, after one warm-up call.

    Runs at least ``repeat`` times, and more until ``min_total`` seconds have passed (at most
    ``20 * repeat`` runs). The minimum is the least disturbed by other load on the machine.
    """
    fn()
    _sync()
    times = []
    start = time.perf_counter()
    while len(times) < repeat or (
        time.perf_counter() - start < min_total and len(times) < 20 * repeat
    ):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def _sync() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def row(
    benchmark: str,
    case: str,
    value: float,
    unit: str,
    *,
    baseline: float | None = None,
    higher_is_better: bool = True,
    peak_mem_mb: float | None = None,
    device: str = "cpu",
    note: str = "",
) -> dict:
    """One result row; ``ratio`` is the speed-up over the baseline (> 1: emdet is faster)."""
    ratio = None
    if baseline:
        ratio = value / baseline if higher_is_better else baseline / value
    return {
        "benchmark": benchmark,
        "case": case,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "ratio": ratio,
        "peak_mem_MB": peak_mem_mb,
        "device": device,
        "note": note,
    }


def peak_memory_mb(module_file: str, case: str, *, quick: bool, device: str) -> float | None:
    """Peak extra memory (MB) of one run of ``make_case(case, quick, device)()``, in a subprocess.

    ``module_file`` must define ``make_case(case: str, quick: bool, device: str) -> callable``.
    Returns None if the subprocess fails (its error goes to stderr).
    """
    code = f"""
import importlib.util, json, resource, sys
sys.path.insert(0, {str(HERE)!r})
spec = importlib.util.spec_from_file_location("bench_case", {module_file!r})
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
import os, torch
if os.environ.get("EMDET_BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["EMDET_BENCH_THREADS"]))
from _common import _measure
fn = mod.make_case({case!r}, {quick!r}, {device!r})
print(json.dumps(_measure(fn, {device!r})))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(f"peak memory of {case!r} failed:\n{out.stderr[-2000:]}\n")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rss_kb() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _hwm_kb() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _measure(fn: Callable[[], object], device: str) -> float:
    """Peak extra memory in MB of one call of ``fn`` (see module docstring)."""
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    reset = False
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the resident-set high-water mark
        reset = True
    except OSError:
        pass
    rss = _rss_kb()
    if reset and rss is not None:
        fn()
        return max(0, (_hwm_kb() or 0) - rss) / 1024
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def devices() -> list[str]:
    """``["cpu"]``, plus ``"cuda"`` when a GPU is available."""
    import torch

    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def rods(rng: np.random.Generator, n: int, field: float, *, length=(5.0, 60.0), aspect=(3.0, 10.0)):
    """``(n, 5)`` random rods ``(cx, cy, w, h, angle)``: centres uniform in a square field."""
    lengths = rng.uniform(*length, n)
    return np.stack(
        [
            rng.uniform(0, field, n),
            rng.uniform(0, field, n),
            lengths,
            lengths / rng.uniform(*aspect, n),
            rng.uniform(-180, 180, n),
        ],
        1,
    )


def polygons(boxes: np.ndarray):
    """Shapely polygons of rotated boxes in detectron2's convention."""
    import shapely

    cx, cy, w, h, a = np.asarray(boxes, dtype=np.float64).T
    t = np.deg2rad(a)
    c, s = np.cos(t), np.sin(t)
    rect = [(-w / 2, h / 2), (-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2)]
    pts = np.stack(
        [np.stack([s * yy + c * xx + cx, c * yy - s * xx + cy], -1) for xx, yy in rect], 1
    )
    return shapely.polygons(pts)


def load_module(path: Path):
    """Import a benchmark module from its file (the folder is not a package)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def machine() -> dict:
    """A few facts about where the numbers were measured."""
    import platform

    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info
