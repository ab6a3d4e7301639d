"""LabelImg text formats -> instances: YOLO and "LabelImg with KITTI BEV rotation".

Both keep one ``.txt`` per image (same name as the image) and a ``classes.txt`` beside them whose
line *i* (from 0) names class index *i*. The image is looked for by the txt's name with any image
extension, in ``images_dir`` first, then beside the txt.

YOLO (``--format yolo``): lines ``class cx cy w h``, all but the class as fractions of the image
width/height.

LabelImg-KITTI (``--format labelimg-kitti``): lines ``class cx cy w h rotation [content]`` in pixels,
rotation in radians with the roLabelImg sense (clockwise on screen); ``content`` (LabelImg's free
text) is ignored. The class may be an index into ``classes.txt`` or a name. Lines of the 8-corner
variant some builds of that LabelImg fork write, ``x0,y0,x1,y1,x2,y2,x3,y3,name``, are read too:
centre = mean of the corners, ``w = |p1 - p0|``, ``h = |p3 - p0|``,
``rotation = atan2(y1 - y0, x1 - x0)``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ._common import (
    AnnotationError,
    ImageRecord,
    Instance,
    Run,
    check_radians,
    find_image_by_stem,
    image_size,
    to_float,
)
from ._geometry import rolabelimg_corners, rolabelimg_to_rbox


def read_txt(path: Path, run: Run) -> ImageRecord:
    """Read one YOLO or LabelImg-KITTI txt file (``run.fmt`` says which)."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise AnnotationError(path, f"is not UTF-8 text (byte {exc.start}).") from None
    except OSError as exc:
        raise AnnotationError(path, f"cannot be read ({exc.strerror or exc}).") from None
    folders = [f for f in (run.images_dir, path.parent) if f is not None]
    image = find_image_by_stem(path.stem, folders)
    if image is None:
        raise AnnotationError(
            path,
            f"image not found: looked for {path.stem}.<image extension> in "
            f"{', '.join(map(str, folders))}.",
            hint="Name each txt file like its image, and put the images beside the txt files or "
            "pass --images with their folder.",
        )
    width, height = image_size(image, source=path, field_name="image")
    rec = ImageRecord(source=path, image=image, width=width, height=height)
    parse = _yolo_line if run.fmt == "yolo" else _kitti_line
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec.instances.append(parse(line, f"line {n}", path, run, width, height))
        except AnnotationError as err:
            run.problem(err)
    return rec


def _class_name(token: str, where: str, path: Path, run: Run) -> str:
    classes_txt = run.input_dir / "classes.txt"
    try:
        index = int(token)
    except ValueError:
        if run.fmt == "yolo":
            raise AnnotationError(
                path, f"class is {token!r:.40}; expected a class index (0, 1, ...).", obj=where
            ) from None
        return token
    if run.txt_classes is None:
        raise AnnotationError(
            path,
            f"class index {index} needs {classes_txt}, which is missing.",
            obj=where,
            hint="Restore the classes.txt that LabelImg wrote (line i names class index i), or "
            "pass --classes with the names in index order.",
        )
    names = run.txt_classes
    if not 0 <= index < len(names):
        raise AnnotationError(
            path,
            f"class index {index} is not in {classes_txt} (it lists {len(names)} "
            f"class name(s), so indices 0..{len(names) - 1}).",
            obj=where,
            hint="Restore the classes.txt that LabelImg wrote for these files.",
        )
    return names[index]


def _yolo_line(line: str, where: str, path: Path, run: Run, width: int, height: int) -> Instance:
    tokens = line.split()
    if len(tokens) != 5:
        raise AnnotationError(
            path,
            f"has {len(tokens)} values ({line.strip()!r:.60}); expected 5: class cx cy w h.",
            obj=where,
        )
    label = _class_name(tokens[0], where, path, run)
    cx, cy, w, h = (
        to_float(t, path, where, k) for t, k in zip(tokens[1:], "cx cy w h".split(), strict=True)
    )
    if max(cx, cy, w, h) > 1.5:
        raise AnnotationError(
            path,
            f"values cx cy w h = {cx:g} {cy:g} {w:g} {h:g} look like pixels, but YOLO "
            "files hold fractions of the image size (0..1).",
            obj=where,
            hint="Check that LabelImg saved this file in YOLO mode.",
        )
    if w <= 0 or h <= 0:
        raise AnnotationError(
            path,
            f"box has no area (field w is {w:g}, field h is {h:g}; both must be > 0).",
            obj=where,
            hint="Delete the line or redraw the box in LabelImg.",
        )
    x0, x1 = (cx - w / 2) * width, (cx + w / 2) * width
    y0, y1 = (cy - h / 2) * height, (cy + h / 2) * height
    poly = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)
    return Instance(
        label, [poly], where, kind="box", field="cx cy w h", label_field="class"
    )


def _kitti_line(line: str, where: str, path: Path, run: Run, width: int, height: int) -> Instance:
    if line.count(",") >= 8:
        parts = line.strip().split(",")
        xy = np.array([to_float(v, path, where, "corners") for v in parts[:8]]).reshape(4, 2)
        label = ",".join(parts[8:]).strip()
        field = "corners"
        w = float(np.hypot(*(xy[1] - xy[0])))
        h = float(np.hypot(*(xy[3] - xy[0])))
        cx, cy = xy.mean(axis=0)
        angle = math.atan2(xy[1, 1] - xy[0, 1], xy[1, 0] - xy[0, 0])
    else:
        tokens = line.split()
        if len(tokens) < 6:
            raise AnnotationError(
                path,
                f"has {len(tokens)} values ({line.strip()!r:.60}); "
                "expected at least 6: class cx cy w h rotation [content].",
                obj=where,
            )
        label = _class_name(tokens[0], where, path, run)
        cx, cy, w, h, angle = (
            to_float(t, path, where, k)
            for t, k in zip(tokens[1:6], "cx cy w h rotation".split(), strict=True)
        )
        check_radians(angle, path, where, "rotation")
        field = "cx cy w h rotation"
    if w <= 0 or h <= 0:
        raise AnnotationError(
            path,
            f"rotated box has no area (field w is {w:g}, field h is {h:g}; both must be > 0).",
            obj=where,
            hint="Delete the line or redraw the box in LabelImg.",
        )
    return Instance(
        label,
        [rolabelimg_corners(cx, cy, w, h, angle)],
        where,
        kind="rbox",
        rbox=rolabelimg_to_rbox(cx, cy, w, h, angle),
        field=field,
        label_field="class",
    )
