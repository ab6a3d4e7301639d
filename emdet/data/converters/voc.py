"""LabelImg Pascal VOC XML and roLabelImg XML -> instances.

Pascal VOC (``--format voc``): ``<object><name/><bndbox><xmin/><ymin/><xmax/><ymax/></bndbox>``.
Coordinates are used as written: LabelImg stores canvas pixel positions (it raises 0 to 1), so no
1-based shift as in the original VOC devkit is applied. ``<size>`` is checked against the image
(a size of 0, written by some tools, is ignored).

roLabelImg (``--format rolabelimg``): the same file with ``<robndbox><cx/><cy/><w/><h/><angle/>``
objects (angle in radians, clockwise on screen) besides plain ``<bndbox>`` ones. Rotated objects get
``rbox`` (detectron2 convention, see :mod:`._geometry`) and their 4 corners as segmentation;
plain boxes in these files get an ``rbox`` with angle 0 too (canonical, so ``-90`` when taller
than wide), as rotated data sets need one on every annotation.

The image is looked for as ``<filename>`` in ``images_dir`` and beside the XML, then by the XML's
own name with any image extension, then at ``<path>``.

Files with a ``<!DOCTYPE>`` or ``<!ENTITY>`` declaration are refused before they are parsed into
a tree: LabelImg never writes one, and entities are how XML bombs ("billion laughs") and
external-entity reads (XXE) work.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath
from xml.parsers import expat

import numpy as np

from ._common import (
    AnnotationError,
    ImageRecord,
    Instance,
    Run,
    check_radians,
    find_image_by_stem,
    image_size,
    is_file,
    to_float,
)
from ._geometry import canonical_rbox, rolabelimg_corners, rolabelimg_to_rbox


def read_voc(path: Path, run: Run) -> ImageRecord:
    """Read one LabelImg VOC or roLabelImg XML file (``run.fmt`` says which)."""
    root = parse_xml(path)
    if root.tag != "annotation":
        raise AnnotationError(
            path,
            f"is not a Pascal VOC annotation: its root element is "
            f"<{root.tag}>, expected <annotation>.",
        )
    image = _resolve_voc_image(path, root, run)
    width, height = image_size(image, source=path, field_name="<filename>")
    size = root.find("size")
    if size is not None:
        for key, actual in (("width", width), ("height", height)):
            text = size.findtext(key)
            if (
                text
                and text.strip()
                and to_float(text, path, "", f"<size><{key}>") not in (0, actual)
            ):
                raise AnnotationError(
                    path,
                    f"<size><{key}> is {text.strip()}, but the image {image} is {width} x "
                    f"{height} px.",
                    hint="The XML probably belongs to another image: check "
                    "<filename>, or re-open the image in LabelImg and save again.",
                )
    rec = ImageRecord(source=path, image=image, width=width, height=height)
    for j, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        where = f"object {j + 1} ({name!r:.60})"
        try:
            rec.instances.append(_object_to_instance(obj, name, where, path, run))
        except AnnotationError as err:
            run.problem(err)
    return rec


class _Declaration(Exception):
    """A DOCTYPE or ENTITY declaration met while checking an XML file."""


def parse_xml(path: Path) -> ET.Element:
    """The root of an XML file, refusing DOCTYPE / ENTITY declarations (see the module doc)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AnnotationError(path, f"cannot be read ({exc.strerror or exc}).") from None
    checker = expat.ParserCreate()

    def refuse(*_args) -> None:
        raise _Declaration

    checker.StartDoctypeDeclHandler = refuse
    checker.EntityDeclHandler = refuse
    try:
        checker.Parse(data, True)
        return ET.fromstring(data)
    except _Declaration:
        raise AnnotationError(
            path,
            "has a <!DOCTYPE> or <!ENTITY> declaration, which LabelImg and roLabelImg never "
            "write; it is refused unread (XML entities can expand to gigabytes or read other "
            "files).",
            hint="Remove the declaration, or re-save the file from LabelImg.",
        ) from None
    except (expat.ExpatError, ET.ParseError) as exc:
        raise AnnotationError(
            path,
            f"is not valid XML ({exc}).",
            hint="Re-save it from LabelImg or repair it in a text editor.",
        ) from None


def _object_to_instance(obj: ET.Element, name: str, where: str, path: Path, run: Run) -> Instance:
    rob, bnd = obj.find("robndbox"), obj.find("bndbox")
    if rob is not None and run.fmt == "voc":
        raise AnnotationError(
            path,
            "has a rotated box <robndbox> (a roLabelImg file).",
            obj=where,
            hint="Convert with --format rolabelimg.",
        )
    if rob is not None:
        cx, cy, w, h, angle = (
            _field(rob, k, "robndbox", path, where) for k in ("cx", "cy", "w", "h", "angle")
        )
        check_radians(angle, path, where, "<robndbox><angle>")
        if w <= 0 or h <= 0:
            raise AnnotationError(
                path,
                f"rotated box has no area (<robndbox><w> {w:g}, <robndbox><h> {h:g}); both "
                "must be > 0.",
                obj=where,
                hint="Delete it or redraw it in roLabelImg.",
            )
        return Instance(
            name,
            [rolabelimg_corners(cx, cy, w, h, angle)],
            where,
            kind="rbox",
            rbox=rolabelimg_to_rbox(cx, cy, w, h, angle),
            field="<robndbox>",
            label_field="<name>",
        )
    if bnd is None:
        raise AnnotationError(path, "has neither <bndbox> nor <robndbox>.", obj=where)
    x0, y0, x1, y1 = (
        _field(bnd, k, "bndbox", path, where) for k in ("xmin", "ymin", "xmax", "ymax")
    )
    if x1 <= x0 or y1 <= y0:
        raise AnnotationError(
            path,
            f"<bndbox> has zero size or is inverted (xmin {x0:g}, xmax {x1:g}, "
            f"ymin {y0:g}, ymax {y1:g}); expected xmax > xmin and ymax > ymin.",
            obj=where,
            hint="Delete it or redraw it in LabelImg.",
        )
    poly = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)
    rbox = None
    if run.fmt == "rolabelimg":  # rotated data sets need an rbox on every annotation
        rbox = canonical_rbox((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, 0.0)
    return Instance(
        name, [poly], where, kind="box", rbox=rbox, field="<bndbox>", label_field="<name>"
    )


def _field(elem: ET.Element, key: str, parent: str, path: Path, where: str) -> float:
    text = elem.findtext(key)
    if text is None:
        raise AnnotationError(path, f"<{parent}> has no <{key}>.", obj=where)
    return to_float(text, path, where, f"<{parent}><{key}>")


def _resolve_voc_image(path: Path, root: ET.Element, run: Run) -> Path:
    filename = (root.findtext("filename") or "").strip().replace("\\", "/")
    folders = [f for f in (run.images_dir, path.parent) if f is not None]
    looked: list[Path] = []
    if filename:
        for folder in folders:
            cand = folder / filename
            looked.append(cand)
            if is_file(cand, path, "<filename>"):
                return cand.resolve()
    for stem in dict.fromkeys([PurePosixPath(filename).stem, path.stem]):
        if stem:
            found = find_image_by_stem(stem, folders)
            if found is not None:
                return found
    saved_path = (root.findtext("path") or "").strip()
    if saved_path and is_file(Path(saved_path), path, "<path>"):
        return Path(saved_path).resolve()
    raise AnnotationError(
        path,
        f"image not found: <filename> is {filename!r}; looked for "
        f"{', '.join(map(str, looked)) or 'it'} and for {path.stem}.<image extension> in "
        f"{', '.join(map(str, folders))}.",
        hint="Put the image beside the XML or pass --images with the folder that holds it.",
    )
