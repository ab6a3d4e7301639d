"""Hostile and broken image files: a clear error naming the file, never a crash or a huge read.

Each case is a file whose header lies (a 148-byte TIFF asking for 18.6 GiB, a PNG whose header
asks for 900 Mpx), is cut short, or is not an image at all. ``read_image`` and ``image_size``
must refuse each one with :class:`~emdet.data.io.ImageReadError` naming the file, before any
pixel is decoded (so the test's memory stays small), and ``tools/predict.py`` on a folder of them
must report each in ``failures.csv`` and still predict the good image beside them.
"""
from __future__ import annotations

import csv
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from emdet.data.io import ImageReadError, ImageTooLargeError, image_size, read_image, write_tiff
from tests.badinput.harness import OUTCOMES, run_tool, snapshot


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(path: Path) -> None:
    """A small PNG whose header asks for 30000 x 30000 pixels (900 MB once decoded)."""
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 30001 * 64, 9)  # the first rows; the decoder would want all
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))


def tiff_header_bomb(path: Path) -> None:
    """A 148-byte little-endian TIFF: one 100000 x 100000 16-bit strip that is not there."""
    tags = [  # (tag, type, count, value): SHORT=3, LONG=4
        (256, 4, 1, 100000), (257, 4, 1, 100000), (258, 3, 1, 16), (259, 3, 1, 1),
        (262, 3, 1, 1), (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, 100000),
        (279, 4, 1, 2 * 10**10 % 2**32),
    ]
    ifd = struct.pack("<H", len(tags))
    for tag, kind, count, value in tags:
        ifd += struct.pack("<HHI", tag, kind, count)
        ifd += struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
    ifd += struct.pack("<I", 0)
    data = b"II*\x00" + struct.pack("<I", 8 + 16) + b"\0" * 16 + ifd
    path.write_bytes(data + b"\0" * max(0, 148 - len(data)))


def _good(path: Path) -> None:
    rng = np.random.default_rng(0)
    write_tiff(path, rng.integers(0, 4000, (256, 256), dtype=np.uint16), pixel_size=1.0,
               unit="nm")


def truncated_tiff(path: Path) -> None:
    _good(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def truncated_png(path: Path) -> None:
    import cv2

    cv2.imwrite(str(path), np.random.default_rng(1).integers(0, 255, (200, 200), np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def truncated_jpeg(path: Path) -> None:
    import cv2

    cv2.imwrite(str(path), np.random.default_rng(2).integers(0, 255, (200, 200), np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def npy_header_bomb(path: Path) -> None:
    """An .npy header that claims 100000 x 100000 float64 and holds 16 bytes."""
    header = {"descr": "<f8", "fortran_order": False, "shape": (100000, 100000)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 16)


def mrc_header_bomb(path: Path) -> None:
    """A valid MRC file whose header is edited to 100000 x 100000 x 1 (data 64 bytes)."""
    import mrcfile

    with mrcfile.new(str(path), overwrite=True) as m:
        m.set_data(np.zeros((8, 8), np.uint8))
    data = bytearray(path.read_bytes())
    data[0:8] = struct.pack("<ii", 100000, 100000)
    path.write_bytes(bytes(data))


def empty(path: Path) -> None:
    path.write_bytes(b"")


def text_as_tiff(path: Path) -> None:
    path.write_bytes(b"this is a lab notebook entry, not a micrograph\n" * 10)


def html_as_png(path: Path) -> None:
    path.write_bytes(b"<html><body>404 Not Found</body></html>")


def tiff_zero_size(path: Path) -> None:
    tiff_header_bomb(path)
    data = bytearray(path.read_bytes())
    # ImageWidth and ImageLength (the first two entries) set to 0
    for entry in (0, 1):
        start = 8 + 16 + 2 + 12 * entry + 8
        data[start:start + 4] = struct.pack("<I", 0)
    path.write_bytes(bytes(data))


#: file name -> (maker, words the message must contain; "pixel" means the pixel limit for
#: image_size and either the limit or "truncated" for read_image, which checks the file length
#: first). image_size reads only the header, so it cannot see a file cut short after it
#: (HEADER_INTACT); read_image must.
CASES = {
    "bomb.png": (png_bomb, "pixel"),
    "header_bomb.tif": (tiff_header_bomb, "pixel"),
    "header_bomb.npy": (npy_header_bomb, "truncated"),  # refused before mmap maps 80 GB
    "header_bomb.mrc": (mrc_header_bomb, "truncated"),
    "truncated.tif": (truncated_tiff, "truncated"),
    "truncated.png": (truncated_png, "truncated"),
    "truncated.jpg": (truncated_jpeg, "truncated"),
    "empty.tif": (empty, ""),
    "empty.png": (empty, ""),
    "notes.tif": (text_as_tiff, ""),
    "page.png": (html_as_png, ""),
    "zero_size.tif": (tiff_zero_size, ""),
}
HEADER_INTACT = {"truncated.tif", "truncated.png", "truncated.jpg"}


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad_images")
    for name, (maker, _) in CASES.items():
        maker(folder / name)
    return folder


@pytest.mark.parametrize("name", sorted(CASES))
def test_read_image_refuses_with_the_file_name(bad_folder, name):
    path = bad_folder / name
    need = CASES[name][1]
    readers = (read_image,) if name in HEADER_INTACT else (read_image, image_size)
    for reader in readers:
        with pytest.raises(ImageReadError) as info:
            reader(path)
        text = str(info.value)
        assert name in text, text
        if need == "pixel" and reader is read_image:
            assert "pixel" in text or "truncated" in text, text
        else:
            assert need in text, text
    if need == "pixel":  # image_size, last, met the limit
        assert isinstance(info.value, ImageTooLargeError)
        assert "EMDET_MAX_PIXELS" in text
    OUTCOMES[f"images/{name}"] = "refused"


def test_the_pixel_limit_is_configurable(tmp_path, monkeypatch):
    path = tmp_path / "ok.tif"
    _good(path)  # 256 x 256 = 65536 pixels
    assert read_image(path)[0].shape == (256, 256)
    monkeypatch.setenv("EMDET_MAX_PIXELS", "60000")
    with pytest.raises(ImageTooLargeError, match=r"65,?536"):
        read_image(path)
    monkeypatch.setenv("EMDET_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="EMDET_MAX_PIXELS"):
        read_image(path)


def test_predict_reports_every_bad_file_and_keeps_the_good_one(tmp_path, bad_folder):
    import emdet  # noqa: F401
    from tests.inference.conftest import QUICK

    images = tmp_path / "images"
    images.mkdir()
    for p in bad_folder.iterdir():
        (images / p.name).write_bytes(p.read_bytes())
    _good(images / "good.tif")
    before = snapshot(images)
    weights = _random_weights(tmp_path)
    out = tmp_path / "out"
    outcome = run_tool("predict", [
        "--config-file", QUICK, "--input", images, "--output", out, "--quiet", "--no-overlays",
        "--tile", "256", "MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu",
    ], case="predict/folder_of_bad_images")
    assert outcome.traceback is None, outcome.traceback
    assert outcome.code in (0, None), outcome.message
    coco = json.loads((out / "predictions.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["good.tif"]
    with open(out / "failures.csv", newline="") as f:
        failed = {row["file"]: row["reason"] for row in csv.DictReader(f)}
    assert set(failed) == set(CASES), failed
    assert all(reason for reason in failed.values())
    assert snapshot(images) == before


def _random_weights(tmp_path: Path) -> Path:
    import torch
    from detectron2.modeling import build_model

    from emdet.config import load_config
    from tests.inference.conftest import QUICK

    torch.manual_seed(0)
    model = build_model(load_config(QUICK, ["MODEL.DEVICE", "cpu"]))
    path = tmp_path / "random.pth"
    torch.save({"model": model.state_dict()}, path)
    return path




def test_a_real_225_megapixel_montage_is_within_the_limit(tmp_path):
    """Pillow's own limit (89 Mpx) once stopped the converter with a traceback on real montages;
    emdet's limit (EMDET_MAX_PIXELS, default 2**29) is the only one."""
    path = tmp_path / "montage.png"
    ihdr = struct.pack(">IIBBBBB", 15000, 15000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                     + _png_chunk(b"IDAT", zlib.compress(b"\0" * 15001)) + _png_chunk(b"IEND", b""))
    assert image_size(path) == (15000, 15000)
