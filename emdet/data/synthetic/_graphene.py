"""HRTEM of polycrystalline graphene with surface contamination (Sadre et al., seed paper 003).

Two grains of the honeycomb lattice (lattice constant 0.246 nm, misoriented by 8-30 degrees)
meet at a wavy grain boundary where the lattice is disordered. Amorphous contamination
patches, drawn towards the boundary as in the paper, wash out the lattice; vacuum regions
(holes in the sheet) have no structure and unit intensity. White- or black-atom contrast is
chosen at random, the monochromated beam falls off across the field of view and the noise is
Poisson at 60-600 electrons per pixel (1 000-10 000 e/A^2 at the default 0.025 nm pixels).
``masks/`` holds 0 = vacuum, 1 = lattice, 2 = contamination; each 8-connected contamination
patch is also a COCO instance (RLE segmentation).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from emdet.data.synthetic._base import (
    Instance,
    SyntheticImage,
    SyntheticKind,
    bbox_of_mask,
    mask_to_rle,
    register_kind,
    remove_small_components,
)
from emdet.data.synthetic._noise import bandpass_noise, detector_counts, illumination, smooth_noise

GRAPHENE_LATTICE_NM = 0.246
_DEFAULT_PIXEL_NM = 0.025


def honeycomb(
    xx: np.ndarray, yy: np.ndarray, a: float, angle_deg: float, origin: tuple[float, float]
) -> np.ndarray:
    """Phase-contrast honeycomb pattern of graphene.

    Sum of the three first-order lattice fringes (plus weaker second-order ones); its minima
    are the carbon atoms (honeycomb), its maxima the ring centres (triangular lattice of
    constant ``a``).

    Parameters
    ----------
    xx, yy : ndarray of float, shape (H, W)
        Pixel-centre coordinates.
    a : float
        Lattice constant in pixels.
    angle_deg : float
        Lattice orientation (60-degree periodic).
    origin : (x, y)
        A ring centre.

    Returns
    -------
    ndarray of float64, shape (H, W), values in about [-1, 1]; atoms near -1.
    """
    g1 = 4 * np.pi / (np.sqrt(3) * a)
    out = np.zeros_like(xx, dtype=np.float64)
    dx, dy = xx - origin[0], yy - origin[1]
    for order, weight, offset in ((1.0, 1.0, 30.0), (np.sqrt(3), 0.35, 0.0)):
        for k in range(3):
            t = np.deg2rad(angle_deg + offset + 120.0 * k)
            out += weight * np.cos(order * g1 * (np.cos(t) * dx + np.sin(t) * dy))
    return out / 2.0


def _region(field: np.ndarray, fraction: float) -> np.ndarray:
    return field > np.quantile(field, 1.0 - fraction)


def generate_graphene(rng: np.random.Generator, size: int, scale: float = 1.0) -> SyntheticImage:
    """One HRTEM image of bicrystalline graphene; see the module docstring."""
    shape = (size, size)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    a = GRAPHENE_LATTICE_NM / _DEFAULT_PIXEL_NM * scale

    # Grain boundary: a wavy line through the central part of the image.
    p0 = size * (0.5 + rng.uniform(-0.2, 0.2, 2))
    phi = rng.uniform(0, np.pi)
    normal = np.array([np.cos(phi), np.sin(phi)])
    along = -(xx - p0[0]) * normal[1] + (yy - p0[1]) * normal[0]
    wave = sum(
        rng.uniform(0.5, 2.0)
        * a
        * np.sin(2 * np.pi * along / (size * rng.uniform(0.2, 0.8)) + rng.uniform(0, 6.3))
        for _ in range(2)
    )
    signed = (xx - p0[0]) * normal[0] + (yy - p0[1]) * normal[1] + wave
    theta1 = rng.uniform(0.0, 60.0)
    theta2 = theta1 + rng.uniform(8.0, 30.0)
    lat1 = honeycomb(xx, yy, a, theta1, tuple(rng.uniform(0, a, 2)))
    lat2 = honeycomb(xx, yy, a, theta2, tuple(rng.uniform(0, a, 2)))
    w = 1.0 / (1.0 + np.exp(-signed / (0.3 * a)))
    disorder = np.exp(-0.5 * (signed / (0.5 * a)) ** 2)
    lattice = (1 - w) * lat1 + w * lat2
    lattice = (1 - 0.6 * disorder) * lattice + 0.6 * disorder * bandpass_noise(
        rng, shape, a, bandwidth=0.3
    )

    # Vacuum (holes in the sheet) and contamination (amorphous carbon, near the boundary).
    vacuum = np.zeros(shape, dtype=bool)
    if rng.random() < 0.7:
        edge = rng.integers(4)
        ramp = [xx, yy, size - xx, size - yy][edge] / size
        vacuum = _region(smooth_noise(rng, shape, size / 10) - 4.0 * ramp, rng.uniform(0.04, 0.15))
        vacuum = remove_small_components(vacuum, int(4 * a * a))
    near_gb = np.exp(-0.5 * (signed / (size / 6)) ** 2)
    contamination = np.zeros(shape, dtype=bool)
    min_patch = int(3 * a * a)
    while not contamination.any():
        field = smooth_noise(rng, shape, size / 14) + 1.2 * near_gb
        contamination = _region(field, rng.uniform(0.12, 0.30)) & ~vacuum
        contamination = remove_small_components(contamination, min_patch)
    contamination = ~remove_small_components(~contamination, min_patch)  # fill small holes
    contamination &= ~vacuum

    sem_seg = np.ones(shape, dtype=np.uint8)
    sem_seg[vacuum] = 0
    sem_seg[contamination] = 2

    soft_vac = ndimage.gaussian_filter(vacuum.astype(float), 0.4 * a)
    soft_con = ndimage.gaussian_filter(contamination.astype(float), 0.3 * a)
    contrast = rng.choice([-1.0, 1.0])  # +1: white-atom contrast
    amorphous = bandpass_noise(rng, shape, 0.8 * a, bandwidth=0.5)
    signal = 1.0 - contrast * 0.12 * lattice * (1.0 - 0.85 * soft_con)
    signal += soft_con * (-0.08 + 0.10 * amorphous)
    signal = soft_vac * 1.0 + (1.0 - soft_vac) * signal
    dose = rng.uniform(60.0, 600.0)
    expected = dose * ndimage.gaussian_filter(signal, 0.05 * a) * illumination(rng, shape)
    image = detector_counts(rng, expected)

    labels, n = ndimage.label(contamination, structure=np.ones((3, 3)))
    instances = []
    for idx in range(1, n + 1):
        patch = labels == idx
        instances.append(
            Instance(
                category="contamination",
                segmentation=mask_to_rle(patch),
                bbox=bbox_of_mask(patch),
                area=float(patch.sum()),
            )
        )
    return SyntheticImage(
        image=image,
        instances=instances,
        sem_seg=sem_seg,
        info={
            "grain_angles_deg": [round(float(theta1), 3), round(float(theta2) % 60.0, 3)],
            "contrast": "white_atom" if contrast > 0 else "black_atom",
            "dose_e_per_px": round(float(dose), 1),
        },
    )


register_kind(
    SyntheticKind(
        name="graphene",
        generate=generate_graphene,
        classes=("contamination",),
        evaluator_type="sem_seg",
        pixel_size=_DEFAULT_PIXEL_NM,
        unit="nm",
        description="HRTEM graphene, two grains, vacuum and amorphous contamination",
        stuff_classes=("vacuum", "lattice", "contamination"),
    )
)
