"""Run every ``benchmarks/bench_*.py`` and print one table; also write ``results/latest.json``.

Usage::

    python benchmarks/run_all.py [--quick] [--only NAME] [--skip NAME] [--threads N]
    python benchmarks/run_all.py --markdown      # README table from the stored results

Each benchmark's rows are also kept in ``results/<bench_name>.json`` (date, machine, rows), so a
benchmark run on its own (``--only``) or on another machine (the GPU rows) adds to the others;
``--markdown`` prints them all as the README's table, each row with the date and machine.

``ratio`` is the speed-up of emdet over the baseline measured in the same run (> 1: emdet is
faster); ``peak_mem_MB`` is emdet's peak extra memory for one call (see ``_common.py``).

On a machine shared with other busy jobs, PyTorch's OpenMP threads spin while they wait for each
other and ops made of many small kernels can slow down 50-100 times (seen here: 4 ms became 260 ms
with 2 threads on 2 busy cores). Run with ``OMP_WAIT_POLICY=PASSIVE`` in the environment, or
``--threads 1``; the JSON records the load average and both settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import COLUMNS, load_module, machine  # noqa: E402


def discover(only: str | None = None, skip: list[str] | None = None) -> list[Path]:
    """The ``bench_*.py`` files, or those whose name contains ``only``, less ``skip`` ones."""
    files = sorted(HERE.glob("bench_*.py"))
    if only:
        files = [f for f in files if only in f.stem]
    return [f for f in files if not any(s in f.stem for s in skip or [])]


def machine_line(info: dict) -> str:
    """One line naming a machine of :func:`_common.machine` (without its load)."""
    where = info.get("gpu") or f"{info.get('cpu_count')} CPU cores"
    return f"{where}, torch {info.get('torch')}, {info.get('torch_threads')} torch threads"


def markdown(results: list[dict]) -> str:
    """Markdown table of stored results (one ``results/<bench>.json`` payload each).

    Rows with a note (what the baseline is, the paper's figure) get a numbered footnote.
    """
    lines = ["| benchmark | case | value | unit | baseline | ratio | peak MB | device | measured |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    notes: list[str] = []
    for res in results:
        when = f"{res['date'][:10]}{' (quick)' if res.get('quick') else ''}"
        for r in res["rows"]:
            case = r["case"]
            if r.get("note"):
                if r["note"] not in notes:
                    notes.append(r["note"])
                case += f" [{notes.index(r['note']) + 1}]"
            cells = [r["benchmark"], case] + [_fmt(r.get(c)) for c in
                                              ("value", "unit", "baseline", "ratio",
                                               "peak_mem_MB", "device")]
            lines.append("| " + " | ".join(cells + [when]) + " |")
    lines.append("")
    lines += [f"[{k}] {note}  " for k, note in enumerate(notes, 1)]
    machines = sorted({machine_line(res["machine"]) for res in results})
    loads = [res["machine"]["load_avg"][0] for res in results if res["machine"].get("load_avg")]
    load = f" (1-minute load average {min(loads):.1f} to {max(loads):.1f} at the start)" if loads \
        else ""
    return "\n".join(lines + ["", "Measured on: " + "; ".join(machines) + load + "."])


def stored_results() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((HERE / "results").glob("bench_*.json"))]


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1e5:
            return f"{value:.3g}"
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.3g}"
    return str(value)


def format_table(rows: list[dict]) -> str:
    """Plain-text table with the :data:`COLUMNS`, notes listed below it."""
    cells = [COLUMNS] + [[_fmt(r.get(c)) for c in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [
        f"[{i}] {r['benchmark']} / {r['case']}: {r['note']}"
        for i, r in enumerate(rows)
        if r.get("note")
    ]
    return "\n".join(lines + ([""] + notes if notes else []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller baselines, fewer repeats")
    parser.add_argument("--only", help="run only benchmarks whose file name contains this")
    parser.add_argument("--skip", action="append", default=[],
                        help="leave out benchmarks whose file name contains this (repeatable)")
    parser.add_argument("--markdown", action="store_true",
                        help="print the stored results as a markdown table and exit")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's own choice)"
    )
    args = parser.parse_args()
    if args.markdown:
        print(markdown(stored_results()))
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        os.environ["EMDET_BENCH_THREADS"] = str(args.threads)  # for the memory subprocesses

    files = discover(args.only, args.skip)
    if not files:
        raise SystemExit(f"no benchmarks/bench_*.py matches --only {args.only!r}")
    rows: list[dict] = []
    start = time.time()
    (HERE / "results").mkdir(exist_ok=True)
    for path in files:
        print(f"running {path.name} ...", file=sys.stderr, flush=True)
        t0 = time.time()
        these = load_module(path).run(quick=args.quick)
        rows.extend(these)
        _write_json(HERE / "results" / f"{path.stem}.json", {
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick,
            "seconds": round(time.time() - t0, 1), "machine": machine(), "rows": these})
    print(format_table(rows))

    out = HERE / "results" / "latest.json"
    payload = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "quick": args.quick,
        "seconds": round(time.time() - start, 1),
        "machine": machine(),
        "rows": rows,
    }
    _write_json(out, payload)
    print(f"\nwrote {out.relative_to(HERE.parent)}", file=sys.stderr)


def _write_json(path: Path, payload: dict) -> None:
    from emdet.utils.atomic import atomic_write

    atomic_write(path, json.dumps(payload, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
