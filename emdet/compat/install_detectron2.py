"""Install detectron2 0.6's Python package on today's stack, without its C++ extension.

This is the one place where emdet adapts detectron2 to the current Python stack. It is a
standard-library-only script so that it can run before emdet itself is installed::

    python emdet/compat/install_detectron2.py            # into the running interpreter
    python emdet/compat/install_detectron2.py --check    # say what is installed, change nothing

What it does, in order:

1. If a detectron2 with a compiled ``detectron2._C`` already imports (an official build from
   source), it does nothing: emdet uses those compiled ops.
2. Otherwise it takes the sdist ``pb1-detectron2==0.6`` (the only detectron2 0.6 on PyPI; its
   ``setup.py`` cannot build because the C++ sources are missing), from ``--sdist PATH``, from
   ``$EMDET_DETECTRON2_SDIST`` or downloaded from PyPI, and verifies its sha256 before anything
   else is done with it.
3. It applies the text patches in :data:`PATCHES` (each must match exactly as often as stated,
   so a different sdist can never be half-patched), adds ``detectron2/_C.py`` (:data:`C_STUB`),
   which forwards to emdet's PyTorch ops so that detectron2 imports in any order, and installs
   the ``detectron2`` package with pip, without the extension, as distribution
   ``pb1-detectron2``.

The missing compiled ops (rotated IoU/NMS/ROIAlign) are supplied at import time by
:mod:`emdet.compat` from :mod:`emdet.ops`; nothing here depends on emdet.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

SDIST_NAME = "pb1-detectron2-0.6.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
SDIST_URL = (
    "https://files.pythonhosted.org/packages/60/26/"
    "48f5bbb7ee492696a21da23303daeecdfe3942c498a70d34108acf63b2bd/" + SDIST_NAME
)
#: Written into the installed package so emdet can tell a patched install from a stale one.
MARKER = "EMDET_PATCHED"
PATCH_VERSION = "2"

#: ``detectron2/_C.py``: makes ``from detectron2 import _C`` work in any import order by
#: forwarding to emdet's PyTorch ops (the marker is set first: emdet checks it while importing).
C_STUB = """\
# Written by emdet/compat/install_detectron2.py: this detectron2 has no C++ extension; its
# compiled ops come from emdet.ops (pure PyTorch, CPU and CUDA). See emdet/compat/__init__.py.
EMDET_PURE_PYTORCH = True
from emdet.compat._C import *  # noqa: E402,F401,F403
"""

#: (file inside the sdist, regex, replacement, expected number of matches).
#: Why each exists is the comment above it.
PATCHES: list[tuple[str, str, str, int]] = [
    # Pillow >= 10 removed Image.LINEAR (it was an alias of BILINEAR).
    ("detectron2/data/transforms/transform.py", r"Image\.LINEAR\b", "Image.BILINEAR", 1),
    # setuptools >= 81 no longer ships pkg_resources; importlib.resources does the same job.
    ("detectron2/model_zoo/model_zoo.py", r"^import pkg_resources\n", "import importlib.resources\n", 1),
    (
        "detectron2/model_zoo/model_zoo.py",
        r'pkg_resources\.resource_filename\(\s*"detectron2\.model_zoo", os\.path\.join\("configs", '
        r"config_path\)\s*\)",
        'str(importlib.resources.files("detectron2.model_zoo").joinpath("configs", config_path))',
        1,
    ),
    # COCOEvaluator's fast path is C++ (detectron2._C.COCOevalAccumulate). Without it, fall back
    # to pycocotools' official implementation instead of failing at the end of an evaluation.
    (
        "detectron2/evaluation/coco_evaluation.py",
        r"self\._use_fast_impl = use_fast_impl\n",
        "self._use_fast_impl = use_fast_impl and _has_fast_cocoeval()\n",
        1,
    ),
    (
        "detectron2/evaluation/coco_evaluation.py",
        r"\nclass COCOEvaluator\(",
        "\ndef _has_fast_cocoeval():  # added by emdet: the fast path needs the compiled _C\n"
        "    from detectron2 import _C\n\n"
        '    return hasattr(_C, "COCOevalAccumulate")\n\n\nclass COCOEvaluator(',
        1,
    ),
]
#: numpy 2 removed the aliases np.int/np.float/np.object (np.bool returned with another meaning).
#: Replaced by the builtins everywhere in the package; the count is checked too.
NUMPY_ALIAS_RE = re.compile(r"\bnp\.(bool|int|float|object)\b")
NUMPY_ALIAS_EXPECTED = 18


class InstallError(RuntimeError):
    """Raised with a message that says what to do."""


def compiled_detectron2_available(python: str = sys.executable) -> bool:
    """True if ``python`` can import an official detectron2 with its compiled extension."""
    code = (
        "import detectron2._C as C, sys; "
        "sys.exit(0 if hasattr(C, 'nms_rotated') and not hasattr(C, 'EMDET_PURE_PYTORCH') else 1)"
    )
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def patched_detectron2_installed(python: str = sys.executable) -> bool:
    """True if ``python`` already has this script's detectron2 (same patch version)."""
    code = (
        "import importlib.util, pathlib, sys; s = importlib.util.find_spec('detectron2');"
        f"m = s and pathlib.Path(s.origin).with_name('{MARKER}');"
        f"sys.exit(0 if m and m.exists() and m.read_text().strip() == '{PATCH_VERSION}' else 1)"
    )
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_sdist(dest_dir: Path, sdist: str | None) -> Path:
    """Return a verified copy of the sdist: from ``sdist``, the environment, or PyPI."""
    source = sdist or os.environ.get("EMDET_DETECTRON2_SDIST")
    dest = dest_dir / SDIST_NAME
    if source:
        if not Path(source).is_file():
            raise InstallError(f"detectron2 sdist {source!r} does not exist")
        shutil.copyfile(source, dest)
    else:
        print(f"[emdet] downloading {SDIST_NAME} from PyPI", flush=True)
        try:
            with urllib.request.urlopen(SDIST_URL, timeout=120) as r, open(dest, "wb") as f:
                shutil.copyfileobj(r, f)
        except OSError as e:
            raise InstallError(
                f"could not download {SDIST_URL} ({e}). Without network, download it elsewhere "
                f"and run with --sdist PATH or EMDET_DETECTRON2_SDIST=PATH."
            ) from e
    got = sha256_of(dest)
    if got != SDIST_SHA256:
        raise InstallError(
            f"{source or SDIST_URL}: sha256 is {got}, expected {SDIST_SHA256}; refusing to install "
            "a detectron2 sdist that is not the one emdet was tested with."
        )
    return dest


def apply_patches(root: Path) -> None:
    """Apply :data:`PATCHES` and the numpy alias fix to the extracted sdist at ``root``."""
    for rel, pattern, repl, expected in PATCHES:
        path = root / rel
        text = path.read_text()
        new, n = re.subn(pattern, repl, text, flags=re.MULTILINE)
        if n != expected:
            raise InstallError(f"patch for {rel} matched {n} times, expected {expected}")
        path.write_text(new)
    total = 0
    for path in sorted(root.glob("detectron2/**/*.py")):
        text = path.read_text()
        new, n = NUMPY_ALIAS_RE.subn(lambda m: m.group(1), text)
        if n:
            path.write_text(new)
            total += n
    if total != NUMPY_ALIAS_EXPECTED:
        raise InstallError(f"numpy alias fix matched {total} times, expected {NUMPY_ALIAS_EXPECTED}")
    (root / "detectron2" / "_C.py").write_text(C_STUB)
    (root / "detectron2" / MARKER).write_text(PATCH_VERSION + "\n")


SETUP_PY = '''\
# Written by emdet/compat/install_detectron2.py: detectron2 0.6 without its C++ extension.
from setuptools import find_packages, setup

setup(
    name="pb1-detectron2",
    version="0.6",
    packages=find_packages(include=["detectron2", "detectron2.*"]),
    package_data={"detectron2": ["EMDET_PATCHED"], "detectron2.model_zoo": ["configs/**/*"]},
    include_package_data=False,
)
'''


def install(sdist: str | None = None, python: str = sys.executable, force: bool = False) -> str:
    """Install detectron2 into ``python``'s environment; return what was done."""
    if compiled_detectron2_available(python):
        return "official detectron2 with compiled ops found; nothing to do"
    if not force and patched_detectron2_installed(python):
        return "patched pb1-detectron2 0.6 already installed; nothing to do"
    with tempfile.TemporaryDirectory(prefix="emdet-d2-") as tmp:
        tmp_path = Path(tmp)
        archive = fetch_sdist(tmp_path, sdist)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp_path, filter="data")
        root = tmp_path / "pb1-detectron2-0.6"
        apply_patches(root)
        src = tmp_path / "src"
        src.mkdir()
        shutil.copytree(root / "detectron2", src / "detectron2")
        (src / "setup.py").write_text(SETUP_PY)
        cmd = [python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q", str(src)]
        if subprocess.run(cmd).returncode != 0:
            raise InstallError("pip could not install the patched detectron2 (see pip's output)")
    return "installed patched pb1-detectron2 0.6 (pure Python; ops from emdet.ops)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sdist", help="local pb1-detectron2-0.6.tar.gz (default: download)")
    parser.add_argument("--python", default=sys.executable, help="interpreter to install into")
    parser.add_argument("--force", action="store_true", help="reinstall even if present")
    parser.add_argument("--check", action="store_true", help="report only, change nothing")
    args = parser.parse_args(argv)
    if args.check:
        if compiled_detectron2_available(args.python):
            print("official detectron2 with compiled ops")
        elif patched_detectron2_installed(args.python):
            print("patched pb1-detectron2 0.6")
        else:
            print("no usable detectron2")
            sys.exit(1)
        return
    try:
        print("[emdet] detectron2:", install(args.sdist, args.python, args.force), flush=True)
    except InstallError as e:
        sys.exit(f"[emdet] error: {e}")


if __name__ == "__main__":
    main()
