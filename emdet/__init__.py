"""emdet: detectron2 for electron-microscopy images.

Importing emdet makes detectron2 fully importable (see :mod:`emdet.compat`), whether an official
compiled detectron2 or the pure-Python ``pb1-detectron2`` is installed.
"""
from emdet.compat import detectron2_status, ensure_detectron2, has_compiled_ops

__version__ = "0.1.0"
__all__ = ["__version__", "detectron2_status", "ensure_detectron2", "has_compiled_ops"]

ensure_detectron2()
