"""Seeded synthetic EM data sets in the layout of real ones, for tests, demos and smoke training.

Five kinds, each modelled on a seed paper: ``vesicles`` (TEM bright field, polygons),
``nanorods`` (HAADF-STEM, rotated boxes), ``merons`` (labyrinth domains, points), ``graphene``
(HRTEM, semantic masks + contamination instances) and ``atoms`` (low-dose atomic columns,
points + label masks); and ``haadf`` (AC-HAADF-STEM heavy atoms with probe tails, scan
distortion, an amorphous support and varying dose, points), the pre-training set of the shipped
atom finder. :func:`make_synthetic` writes a data set folder;
:func:`generate_image` returns one image and its ground truth in memory.

    >>> from emdet.data.synthetic import make_synthetic
    >>> make_synthetic("nanorods", num=5, size=256, seed=0, output="datasets/nanorods_synth")
"""

# Importing the generator modules registers their kinds.
from emdet.data.synthetic import (  # noqa: F401
    _atoms,
    _graphene,
    _haadf,
    _merons,
    _nanorods,
    _vesicles,
)
from emdet.data.synthetic._base import SYNTHETIC_KINDS, Instance, SyntheticImage, SyntheticKind
from emdet.data.synthetic._writer import DEFAULT_SPLIT, generate_image, make_synthetic, parse_split

__all__ = [
    "DEFAULT_SPLIT",
    "SYNTHETIC_KINDS",
    "Instance",
    "SyntheticImage",
    "SyntheticKind",
    "generate_image",
    "make_synthetic",
    "parse_split",
]
