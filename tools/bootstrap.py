#!/usr/bin/env python3
"""Set up emdet on a fresh machine, then run the demo or the tests. Standard library only.

    python3 tools/bootstrap.py demo            # set up, then run the demo on synthetic data
    python3 tools/bootstrap.py test [ARGS...]  # set up, then run pytest (ARGS go to pytest)
    python3 tools/bootstrap.py setup           # set up only

Set-up makes an isolated virtual environment (``.venv`` beside this repo, or ``$EMDET_VENV``) and
installs into it: the torch/torchvision pair pinned in ``constraints.txt`` (PyPI builds; they run
on CPU too), emdet itself (editable, with test tools) and detectron2 (an official build if one is
already importable there, else the patched pure-Python 0.6 from
``emdet/compat/install_detectron2.py``). A second run finds the stamp it left and skips all of it
unless one of the files that define the environment changed.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("EMDET_VENV", REPO / ".venv"))
#: Files whose content defines the environment; the stamp is their hash.
DEFINING = ["setup.py", "pyproject.toml", "constraints.txt", "emdet/compat/install_detectron2.py"]
STAMP = VENV / ".emdet-setup"


def _python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _run(cmd: list[str], **kw) -> None:
    print("[emdet] $", " ".join(str(c) for c in cmd), flush=True)
    result = subprocess.run([str(c) for c in cmd], **kw)
    if result.returncode != 0:
        sys.exit(f"[emdet] set-up failed at: {' '.join(str(c) for c in cmd)}")


def _fingerprint() -> str:
    digest = hashlib.sha256(sys.version.encode())
    for rel in DEFINING:
        digest.update(rel.encode() + b"\0" + (REPO / rel).read_bytes())
    return digest.hexdigest()


def _works(python: Path) -> bool:
    code = "import emdet, detectron2.modeling, detectron2.evaluation, pytest"
    return subprocess.run([str(python), "-c", code], capture_output=True, cwd=REPO).returncode == 0


def setup() -> Path:
    """Create/refresh the environment; return its Python."""
    if sys.version_info < (3, 10):  # noqa: UP036  (bootstrap runs on any system Python)
        sys.exit(f"[emdet] needs Python >= 3.10, this is {sys.version.split()[0]}")
    python = _python()
    fingerprint = _fingerprint()
    if python.exists() and STAMP.exists() and STAMP.read_text().strip() == fingerprint:
        if _works(python):
            print(f"[emdet] environment {VENV} is up to date", flush=True)
            return python
    if not python.exists():
        print(f"[emdet] creating virtual environment {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    constraints = ["-c", REPO / "constraints.txt"]
    # torch first and pinned, so no resolver can pair a local CPU-only torch with a torchvision
    # built for another torch.
    _run(pip + constraints + ["torch", "torchvision"])
    _run(pip + constraints + ["-e", f"{REPO}[dev]"])
    _run([python, REPO / "emdet/compat/install_detectron2.py"])
    if not _works(python):
        sys.exit("[emdet] set-up finished but `import emdet, detectron2.modeling` fails; see above")
    STAMP.write_text(fingerprint + "\n")
    print(f"[emdet] environment ready: {VENV}", flush=True)
    return python


def main(argv: list[str]) -> int:
    if argv and argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0
    if not argv or argv[0] not in {"setup", "demo", "test"}:
        print(__doc__)
        if argv:
            print(f"bootstrap.py: unknown command {argv[0]!r}; use setup, demo or test.",
                  file=sys.stderr)
        return 2
    python = setup()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if argv[0] == "demo":
        return subprocess.run([str(python), "tools/demo.py", *argv[1:]], cwd=REPO, env=env).returncode
    if argv[0] == "test":
        cmd = [str(python), "-m", "pytest", *argv[1:]]
        return subprocess.run(cmd, cwd=REPO, env=env).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
