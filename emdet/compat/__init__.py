"""Make detectron2 importable and complete, whichever detectron2 is installed.

``import emdet`` calls :func:`ensure_detectron2` once. It

* uses an official detectron2's compiled ``detectron2._C`` when one imports, or
* installs :mod:`emdet.compat._C` as ``detectron2._C``: the rotated-box ops from
  :mod:`emdet.ops` (pure PyTorch, CPU and CUDA), ``torch.ops.detectron2.nms_rotated``, and clear
  ``NotImplementedError`` for deformable convolution.

Source-level fixes for today's Pillow/numpy/setuptools are applied once, at install time, by
``emdet/compat/install_detectron2.py``; this module only checks that they were.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from pathlib import Path

__all__ = ["ensure_detectron2", "has_compiled_ops", "detectron2_status"]

_STATUS: str | None = None


class Detectron2NotInstalled(ImportError):
    pass


def _install_hint() -> str:
    return (
        "Run `python emdet/compat/install_detectron2.py` in this environment (or the README's "
        "set-up command) to install a patched detectron2 0.6."
    )


def ensure_detectron2() -> str:
    """Make ``detectron2`` fully importable; return how (``"compiled"`` or ``"emdet.ops"``)."""
    global _STATUS
    if _STATUS is not None:
        return _STATUS
    # detectron2 0.6 decorates helpers with torch.jit.script, which torch >= 2.10 flags on every
    # import; the scripted helpers still work, so the notice is noise for users.
    warnings.filterwarnings(
        "ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning
    )
    spec = importlib.util.find_spec("detectron2")
    if spec is None:
        raise Detectron2NotInstalled("detectron2 is not installed. " + _install_hint())
    module = sys.modules.get("detectron2._C")
    if module is None:
        try:
            module = importlib.import_module("detectron2._C")
        except ImportError:
            module = None
    if module is not None and getattr(module, "EMDET_PURE_PYTORCH", False):
        # emdet's installer wrote detectron2/_C.py, which forwards to emdet.ops
        _STATUS = "emdet.ops"
    elif module is not None and hasattr(module, "nms_rotated"):
        _STATUS = "compiled"
    else:
        marker = Path(spec.origin).with_name("EMDET_PATCHED")
        if not marker.exists():
            raise Detectron2NotInstalled(
                f"detectron2 at {Path(spec.origin).parent} has no compiled ops and was not "
                "patched for today's Pillow/numpy/setuptools. " + _install_hint()
            )
        from emdet.compat import _C

        sys.modules["detectron2._C"] = _C
        import detectron2

        detectron2._C = _C
        _STATUS = "emdet.ops"
    return _STATUS


def has_compiled_ops() -> bool:
    """True when detectron2's own compiled extension is in use."""
    return ensure_detectron2() == "compiled"


def detectron2_status() -> str:
    """One line for logs: which detectron2 and which ops are in use."""
    import detectron2

    how = ensure_detectron2()
    ops = "compiled detectron2._C" if how == "compiled" else "emdet.ops (PyTorch)"
    return f"detectron2 {detectron2.__version__} at {Path(detectron2.__file__).parent}, ops: {ops}"
