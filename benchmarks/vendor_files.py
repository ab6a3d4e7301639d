"""Real vendor files: does emdet read the image and pixel size that the maintained readers do?

    python benchmarks/vendor_files.py [--cache output/vendor_samples] [--list]

The test files that ship inside the hyperspy (1.6.5 and 1.7.6) and mrcfile (1.5.4) source
distributions are real files from FEI/Thermo, Zeiss, TVIPS, Olympus, Gatan, TIA and Velox
software. They are fetched once from PyPI (sha256-checked) into ``--cache`` and never
committed. Every TIFF, DM3/DM4, SER, EMD and MRC file among them, deduplicated by content, is
read twice:

* the reference: rosettasciio's reader for the format (mrcfile for MRC), with the rules a
  microscopist expects on top: a spectrum or spectrum image (an energy axis, or an EELS/EDS/CL
  signal type) is not an image; an RGB preview series is not the image when a greyscale series
  of the same size follows (Olympus SIS); an FEI/Thermo SEM databar (metadata
  ``[Image] ResolutionY``) is not part of the image; a reciprocal-space calibration or one
  outside 1 pm to 1 m per pixel gives no pixel size;
* ``emdet.data.io.read_image``.

They agree when both refuse the file, or both give the same image size, number of frames and
pixel size (to 1e-6). The figure is the number of files that agree, per format and in all.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import logging
import math
import re
import sys
import tarfile
import urllib.request
import warnings
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: What a microscope's software writes (the sdists' PNG/NPY files are plot baselines and arrays).
VENDOR_EXTENSIONS = (".tif", ".tiff", ".dm3", ".dm4", ".ser", ".emd", ".mrc", ".mrcs", ".rec", ".st")
SDISTS = [  # (name, version, sha256 of the sdist)
    ("hyperspy", "1.6.5", "040d21c40e609d6c4b7b2c9e283a5ccf398450f5996a1dc2442d29e44e03793a"),
    ("hyperspy", "1.7.6", "6910897f055aa31f5c29f045d879c4310b783ab0377e3cd3fa2f6ebb93a0ed87"),
    ("mrcfile", "1.5.4", "8fa9eb2e237d87d99b301c61bf02854dd85a451db25eefcbe142c09b36d8d601"),
]


def fetch(cache: Path) -> list[Path]:
    """The sample files of every sdist, extracted under ``cache`` (downloaded once)."""
    files = []
    for name, version, sha in SDISTS:
        target = cache / f"{name}-{version}"
        done = target / ".complete"
        if not done.is_file():
            local = cache / f"{name}-{version}.tar.gz"  # or put the sdist there by hand
            source = str(local)
            if local.is_file():
                blob = local.read_bytes()
            else:  # PyPI's simple index (PEP 503), as pip finds it
                index = urllib.request.urlopen(f"https://pypi.org/simple/{name}/",
                                               timeout=60).read().decode()
                found = re.search(rf'href="([^"#]*/{name}-{re.escape(version)}\.tar\.gz)', index)
                if not found:
                    sys.exit(f"vendor_files: no {name}-{version}.tar.gz on PyPI's index")
                source = found.group(1)
                print(f"downloading {source}", flush=True)
                blob = urllib.request.urlopen(found.group(1), timeout=300).read()
            if hashlib.sha256(blob).hexdigest() != sha:
                sys.exit(f"vendor_files: {source} does not have the pinned sha256 {sha}")
            with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
                for member in tar.getmembers():
                    suffix = Path(member.name).suffix.lower()
                    if not member.isfile() or "/tests/" not in member.name:
                        continue
                    if suffix in VENDOR_EXTENSIONS or suffix == ".zip":
                        out = target / Path(member.name).relative_to(f"{name}-{version}")
                        out.parent.mkdir(parents=True, exist_ok=True)
                        out.write_bytes(tar.extractfile(member).read())
                        if suffix == ".zip":  # hyperspy zips some vendor samples
                            with zipfile.ZipFile(out) as z:
                                z.extractall(out.with_suffix(""))
            done.write_text("ok\n")
        files += [p for p in sorted(target.rglob("*"))
                  if p.is_file() and p.suffix.lower() in VENDOR_EXTENSIONS]
    unique, seen = [], set()
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            unique.append(path)
    return unique


def _length_nm(scale, unit):
    from emdet.data.io import normalise_unit

    value, unit = normalise_unit(scale, unit)
    if unit != "nm" or value is None:
        return None  # uncalibrated, reciprocal or not a length
    return value if 1e-3 <= value <= 1e9 else None  # 1 pm to 1 m per pixel


def _is_spectral(signal: dict) -> bool:
    kind = str((signal.get("metadata") or {}).get("Signal", {}).get("signal_type", "") or "")
    if kind.upper().startswith(("EELS", "EDS", "EDX", "CL")):
        return True
    return any(str(a.get("units") or "").lower() in ("ev", "kev")
               or "energy" in str(a.get("name") or "").lower()
               or "wavelength" in str(a.get("name") or "").lower()
               for a in signal.get("axes") or [])


def reference(path: Path) -> tuple[tuple[int, int], int, float | None] | None:
    """``((H, W), n_frames, pixel size in nm)`` of the file's image, or ``None``: no image."""
    suffix = path.suffix.lower()
    if suffix in (".mrc", ".mrcs", ".rec", ".st"):
        import mrcfile

        with mrcfile.mmap(path, mode="r", permissive=True) as mrc:
            if mrc.data is None or mrc.data.ndim < 2:
                return None
            shape = mrc.data.shape
            voxel = float(mrc.voxel_size.x)
        return (shape[-2], shape[-1]), math.prod(shape[:-2]), _length_nm(voxel or None, "Å")
    if suffix == ".npy":
        data = np.load(path, mmap_mode="r", allow_pickle=False)
        return ((data.shape[-2], data.shape[-1]), math.prod(data.shape[:-2]), None) \
            if data.ndim >= 2 else None
    if suffix in (".tif", ".tiff"):
        from rsciio.tiff import file_reader
    elif suffix in (".dm3", ".dm4"):
        from rsciio.digitalmicrograph import file_reader
    elif suffix == ".ser":
        from rsciio.tia import file_reader
    else:
        from rsciio.emd import file_reader
    signals = [s for s in file_reader(str(path), lazy=False)
               if not _is_spectral(s) and np.ndim(s["data"]) >= 2
               and (s["data"].dtype.kind in "biufc" or s["data"].dtype.names is not None)
               and sum(not a.get("navigate", False) for a in s["axes"]) == 2]
    if not signals:
        return None
    signal = signals[0]
    rgb = signal["data"].dtype.names is not None
    if rgb:  # an RGB preview with the raw greyscale image after it (Olympus SIS)
        signal = next((s for s in signals[1:] if s["data"].dtype.names is None
                       and s["data"].shape == signal["data"].shape), signal)
    shape = signal["data"].shape
    height = shape[-2]
    if suffix in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            rows = ((tif.fei_metadata or {}).get("Image") or {}).get("ResolutionY") \
                if tif.is_fei else None
        if isinstance(rows, int) and 0 < rows < height:
            height = rows  # the databar below the image
    x_axis = signal["axes"][-1]
    return (height, shape[-1]), math.prod(shape[:-2]), _length_nm(x_axis.get("scale"),
                                                                  x_axis.get("units"))


def emdet_reads(path: Path) -> tuple[tuple[int, int], int, float | None] | None:
    from emdet.data.io import ImageReadError, read_image

    try:
        image, meta = read_image(path)
    except ImageReadError:
        return None
    frames = meta.n_frames
    size = image.shape[-2:]
    pixel = meta.pixel_size_nm
    return (int(size[0]), int(size[1])), frames, pixel


def agree(a, b) -> bool:
    if a is None or b is None:
        return a is b
    if a[0] != b[0] or a[1] != b[1]:
        return False
    if a[2] is None or b[2] is None:
        return a[2] is b[2]
    return math.isclose(a[2], b[2], rel_tol=1e-6)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, default=REPO / "output/vendor_samples")
    p.add_argument("--list", action="store_true", help="print every file, not only differences")
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)  # the readers' own warnings about odd tags
    warnings.simplefilter("ignore")
    files = fetch(args.cache)
    rows: dict[str, list[int]] = {}
    differ = []
    for path in files:
        try:
            ref = reference(path)
        except Exception as exc:  # noqa: BLE001 - a file the reference cannot read at all
            ref = None
            note = f"reference cannot read it ({type(exc).__name__})"
        else:
            note = ""
        got = emdet_reads(path)
        fmt = path.suffix.lower().lstrip(".").replace("tiff", "tif")
        counts = rows.setdefault(fmt, [0, 0])
        counts[0] += 1
        ok = agree(ref, got)
        counts[1] += ok
        name = path.relative_to(args.cache)
        if not ok or args.list:
            differ.append(f"{'ok  ' if ok else 'DIFF'} {name}: reference {ref} {note}; "
                          f"emdet {got}")
    print(f"{len(files)} distinct vendor sample files (hyperspy 1.6.5/1.7.6, mrcfile 1.5.4)")
    print("| format | files | emdet agrees |\n| --- | --- | --- |")
    for fmt, (n, ok) in sorted(rows.items()):
        print(f"| {fmt} | {n} | {ok} |")
    total, ok = sum(n for n, _ in rows.values()), sum(k for _, k in rows.values())
    print(f"| all | {total} | {ok} ({ok / total:.0%}) |")
    print("\n".join(differ))


if __name__ == "__main__":
    main()
