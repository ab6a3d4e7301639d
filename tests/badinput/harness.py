"""Run an emdet tool in-process on hostile or broken input and check how it failed.

Every case of the bad-input suite (``tests/badinput/``) goes through :func:`run_tool`:

* the tool runs as ``python tools/<name>.py ARGS`` would (``runpy`` with ``__name__ ==
  "__main__"``), in this process, so hundreds of cases cost seconds, not a Python start each;
* a clean refusal is ``SystemExit`` with a non-zero code and a message (on stderr or in the exit
  value); any other exception escaping the tool is a traceback, the failure this suite exists to
  find, and is recorded with the case's name;
* :func:`snapshot` hashes every file under a folder, so a test can assert that inputs are
  unchanged and that no partial output was left.

``pytest_terminal_summary`` in ``conftest.py`` prints how many cases ran and how many ended in a
traceback (the issue's "count of cases with zero tracebacks").
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import runpy
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: name -> "refused" | "accepted" | "traceback"; filled by run_tool, read by the summary.
OUTCOMES: dict[str, str] = {}


@dataclass
class Outcome:
    code: int | str | None
    stdout: str
    stderr: str
    traceback: str | None = None
    logs: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        parts = [self.stderr, self.code if isinstance(self.code, str) else "", *self.logs]
        return "\n".join(p for p in parts if p)

    @property
    def refused(self) -> bool:
        return self.traceback is None and self.code not in (None, 0)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


def run_tool(name: str, args: list[str], *, case: str | None = None) -> Outcome:
    """Run ``tools/<name>.py args`` in-process; never raises for the tool's own failure."""
    script = REPO / "tools" / f"{name}.py"
    out, err = io.StringIO(), io.StringIO()
    handler = _Capture()
    root = logging.getLogger()
    root.addHandler(handler)
    old_argv = sys.argv
    sys.argv = [str(script), *map(str, args)]
    code: int | str | None = 0
    tb = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(str(script), run_name="__main__")
    except SystemExit as e:
        code = e.code
    except BaseException:  # noqa: BLE001 - a traceback is what the suite looks for
        tb = traceback.format_exc()
        code = None
    finally:
        sys.argv = old_argv
        root.removeHandler(handler)
    outcome = Outcome(code, out.getvalue(), err.getvalue(), tb, handler.records)
    if "Traceback (most recent call last)" in outcome.stderr:
        outcome.traceback = outcome.traceback or outcome.stderr
    if case is not None:
        OUTCOMES[case] = (
            "traceback" if outcome.traceback else "refused" if outcome.refused else "accepted"
        )
    return outcome


def snapshot(folder: Path) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``folder`` (empty if it does not exist)."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_refused(outcome: Outcome, *needles: str) -> None:
    """The tool stopped with a message (no traceback) that contains every needle."""
    assert outcome.traceback is None, f"traceback instead of a message:\n{outcome.traceback}"
    assert outcome.refused, (
        f"expected a refusal, got exit code {outcome.code!r}\nstdout: {outcome.stdout[-2000:]}\n"
        f"stderr: {outcome.stderr[-2000:]}"
    )
    text = outcome.message
    for needle in needles:
        assert needle in text, f"{needle!r} not in the message:\n{text[-3000:]}"
