"""The npe2 reader: every format :func:`emdet.data.io.read_image` reads."""
from __future__ import annotations

from pathlib import Path


def get_reader(path):
    """The reader function for ``path`` (one file), or None for a file emdet does not read."""
    from emdet.data.io import SUPPORTED_EXTENSIONS

    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    if Path(path).suffix.lower() not in SUPPORTED_EXTENSIONS:
        return None
    return read


def read(path):
    """Layer data of one file (see :func:`emdet.napari.core.read_layers`)."""
    from emdet.napari.core import read_layers

    if isinstance(path, list | tuple):
        path = path[0]
    return read_layers(path)
