"""labelme JSON <-> COCO.

Reading (``--format labelme``), one JSON per image:

* ``polygon`` (>= 3 points) -> a polygon; ``rectangle`` (2 corner points) -> a box;
  ``circle`` (centre, rim point) -> a :data:`~._geometry.CIRCLE_VERTICES`-gon, with
  ``circle: [cx, cy, r]`` kept in the annotation; ``point`` -> a square box of ``point_box_size`` px
  centred on it (clipped to the image), with ``point: [x, y]`` kept in the annotation;
  ``oriented_rectangle`` (labelme 6, 4 corners) -> an ``rbox``; ``mask`` (labelme 5.3+: two
  corner pixels and a base64 PNG of the box) -> an RLE segmentation of exactly those pixels;
  ``line`` / ``linestrip`` -> skipped with a warning. Any other shape type is an error.
* Shapes with the same ``group_id`` *and* label form one instance whose segmentation holds all
  their polygons (points and masks are never grouped).
* ``imagePath`` is resolved relative to the JSON (then in ``images_dir``); if the image is not
  there but ``imageData`` is embedded, the embedded image is written to the extraction folder
  under the *name* of ``imagePath`` (so ``../../x.png`` cannot place it elsewhere) and used. A
  different file already there is never replaced (an error naming both files); an identical one
  is used as it is. The image's size is checked against ``imageWidth`` / ``imageHeight``.
* The JSON is read strictly: ``NaN``/``Infinity``, text or ``true`` where a number belongs, and a
  ``group_id`` that is not an integer are errors naming the field.

Writing (:func:`coco_to_labelme`): one labelme JSON per COCO image, so predictions can be corrected in
labelme; see its docstring for how each annotation becomes shapes.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from tqdm import tqdm

from emdet.data import io as emio
from emdet.data.geometry import rbox_to_polygon as rbox_corners

from ._common import (
    AnnotationError,
    ConversionError,
    ImageRecord,
    Instance,
    Run,
    check_output_path,
    image_bytes_info,
    image_size,
    is_file,
    json_bytes,
    json_number,
    load_json,
    logger,
    posix_relpath,
    refuse_existing,
    write_outputs,
)
from ._geometry import canonical_rbox, circle_polygon

#: The labelme version written into the files made by :func:`coco_to_labelme`.
LABELME_VERSION = "5.2.1"

SHAPE_TYPES = ("polygon", "rectangle", "oriented_rectangle", "circle", "point", "mask", "line",
               "linestrip")
_IGNORED_SHAPES = ("line", "linestrip")
_FORMAT_EXTENSIONS = {
    "PNG": (".png",),
    "JPEG": (".jpg", ".jpeg"),
    "TIFF": (".tif", ".tiff"),
    "BMP": (".bmp",),
    "GIF": (".gif",),
}


# --------------------------------------------------------------------------------------------
# labelme -> instances
# --------------------------------------------------------------------------------------------
def read_labelme(path: Path, run: Run) -> ImageRecord:
    """Read one labelme JSON into an :class:`ImageRecord` (problems go to ``run.problem``)."""
    doc = load_json(path, "labelme file")
    hint = (
        "Keep only labelme JSON files in the input folder (move other JSON files, e.g. an "
        "earlier COCO output, elsewhere)."
    )
    if not isinstance(doc, dict):
        raise AnnotationError(
            path,
            f"is a JSON {type(doc).__name__}, not a labelme file (a JSON object with a "
            "'shapes' list).",
            hint=hint,
        )
    if "shapes" not in doc:
        raise AnnotationError(path, "is not a labelme file: it has no 'shapes' list.", hint=hint)
    if not isinstance(doc["shapes"], list):
        raise AnnotationError(
            path,
            f"field shapes is a {type(doc['shapes']).__name__}; a labelme file has a list of "
            "shapes there.",
            hint=hint,
        )
    image, width, height = _resolve_labelme_image(path, doc, run)
    # labelme shows an SEM image whole; emdet crops its databar (below the image, so the
    # coordinates stand), and the declared height may count the bar's rows too
    bar = emio.databar_rows(image) if doc.get("imageHeight") not in (None, height) else 0
    for key, actual in (("imageWidth", width), ("imageHeight", height)):
        declared = doc.get(key)
        if declared is not None and json_number(declared, path, "", key) not in (
                actual, actual + (bar if key == "imageHeight" else 0)):
            raise AnnotationError(
                path,
                f"{key} is {declared}, but the image {image} is {width} x {height} px.",
                hint="The JSON probably belongs to another image: fix 'imagePath', or re-open "
                "the image in labelme and save again.",
            )
    rec = ImageRecord(source=path, image=image, width=width, height=height)
    groups: dict[tuple[Any, str], Instance] = {}
    members: dict[tuple[Any, str], list[int]] = {}
    for i, shape in enumerate(doc["shapes"]):
        try:
            inst = _shape_to_instance(shape, i, path, run)
        except AnnotationError as err:
            run.problem(err)
            continue
        if inst is None:
            continue
        gid = shape.get("group_id")
        if gid is not None and (isinstance(gid, bool) or not isinstance(gid, int)):
            run.problem(
                AnnotationError(
                    path,
                    f"field group_id is {gid!r:.60}; expected an integer (shapes of one object "
                    "share it) or null.",
                    obj=inst.where,
                    hint="Set it in labelme's shape dialog, or clear it.",
                )
            )
            continue
        if gid is None or inst.point is not None or inst.kind == "mask":
            rec.instances.append(inst)  # points and masks are never grouped
            continue
        key = (gid, inst.label)
        if key not in groups:
            groups[key] = inst
            members[key] = [i + 1]
            rec.instances.append(inst)
        else:
            first = groups[key]
            first.polygons.extend(inst.polygons)
            first.kind, first.circle = "polygon", None
            members[key].append(i + 1)
            first.where = (
                f"group_id {gid} ({inst.label!r}, shapes {', '.join(map(str, members[key]))})"
            )
    return rec


def _resolve_labelme_image(path: Path, doc: dict, run: Run) -> tuple[Path, int, int]:
    raw = doc.get("imagePath") or ""
    if not isinstance(raw, str):
        raise AnnotationError(path, f"field imagePath is {raw!r:.60}; expected a file name.")
    if "\x00" in raw:
        raise AnnotationError(
            path, f"field imagePath is {raw!r:.80}, which holds a NUL character; expected a "
            "file name."
        )
    rel = raw.replace("\\", "/")
    name = PurePosixPath(rel).name
    candidates: list[Path] = []
    if rel:
        candidates += [path.parent / rel, path.parent / name]
        if run.images_dir is not None:
            candidates += [run.images_dir / rel, run.images_dir / name]
    for cand in candidates:
        if is_file(cand, path, "imagePath"):
            width, height = image_size(cand, source=path, field_name="imagePath")
            return cand.resolve(), width, height
    data = doc.get("imageData")
    if not data:
        looked = ", ".join(str(c) for c in dict.fromkeys(candidates)) or "(imagePath is empty)"
        raise AnnotationError(
            path,
            f"image not found: imagePath is {raw!r}; looked for {looked}.",
            hint="Put the image there, correct 'imagePath', or pass --images with the folder "
            "that holds the images.",
        )
    try:
        if not isinstance(data, str):
            raise TypeError(type(data).__name__)
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise AnnotationError(
            path,
            "field imageData is not a base64-encoded image, and the "
            f"image file {raw!r:.80} (field imagePath) is missing.",
            hint="Re-save the file from labelme with the image present.",
        ) from None
    width, height, fmt = image_bytes_info(blob, path, "imageData")
    # Only the name of imagePath is used, so an imagePath that climbs out of the folder
    # ("../../x.png") cannot place the extracted image elsewhere.
    target = (run.extract_dir / _embedded_name(name or path.stem, fmt)).resolve()
    if target in run.extracted and run.extracted[target] != blob:
        raise AnnotationError(
            path,
            f"field imageData: its embedded image would be written to {target}, but another "
            "file's different embedded image has the same name.",
            hint="Give the images distinct names in 'imagePath'.",
        )
    if target not in run.extracted and _exists(target, path):
        if _same_bytes(target, blob):
            return target, width, height  # already there, nothing to write
        raise AnnotationError(
            path,
            f"field imageData: its embedded image would be written to {target}, but that file "
            "already exists and is a different image; it is not replaced.",
            hint=f"If {target.name} is the image of {path.name}, correct 'imagePath' to name "
            "it; otherwise move one of them, or convert with another --images folder.",
        )
    run.extracted[target] = blob
    return target, width, height


def _exists(target: Path, source: Path) -> bool:
    try:
        return target.exists()
    except OSError as exc:
        raise AnnotationError(
            source, f"field imagePath gives an unusable name for the image ({exc})."
        ) from None


def _same_bytes(target: Path, blob: bytes) -> bool:
    try:
        return target.is_file() and target.stat().st_size == len(blob) and (
            target.read_bytes() == blob
        )
    except OSError:
        return False


def _embedded_name(name: str, fmt: str) -> str:
    """File name for an embedded image, with the extension of its real format (labelme stores
    e.g. a TIFF's pixels as PNG in imageData)."""
    exts = _FORMAT_EXTENSIONS.get(fmt.upper(), ("." + fmt.lower(),))
    p = PurePosixPath(name)
    return name if p.suffix.lower() in exts else p.stem + exts[0]


def _shape_to_instance(shape: Any, i: int, path: Path, run: Run) -> Instance | None:
    if not isinstance(shape, dict):
        raise AnnotationError(
            path,
            f"entry {i + 1} of shapes is {shape!r:.40}, not a labelme shape (an object with "
            "label, points, shape_type).",
            obj=f"shape {i + 1}",
        )
    label = shape.get("label")
    stype = shape.get("shape_type") or "polygon"
    shown_type = stype if isinstance(stype, str) and len(stype) <= 30 else f"{stype!r:.30}"
    where = f"shape {i + 1} ({label!r:.60}, {shown_type})"
    if not isinstance(label, str) or not label.strip():
        raise AnnotationError(
            path, f"field label is {label!r:.60}; expected a class name.", obj=where
        )
    label = label.strip()
    if stype in _IGNORED_SHAPES:
        run.warn(f"{path}: {where}: {stype} shapes are not objects; skipped.")
        return None
    if not isinstance(stype, str) or stype not in SHAPE_TYPES:
        raise AnnotationError(
            path,
            f"unknown shape_type {stype!r:.60}; expected one of polygon, rectangle, "
            "oriented_rectangle, circle, point, mask (line and linestrip are skipped).",
            obj=where,
            hint="Redraw it as a polygon in labelme.",
        )
    raw_points = shape.get("points")
    if not isinstance(raw_points, list) or not all(
        isinstance(p, list | tuple) and len(p) == 2 for p in raw_points
    ):
        raise AnnotationError(
            path, f"field points is {raw_points!r:.80}; expected a list of [x, y] pairs.", obj=where
        )
    pts = np.array([[json_number(v, path, where, "points") for v in p] for p in raw_points], float)
    pts = pts.reshape(-1, 2)
    n = len(pts)
    if stype == "polygon":
        if n < 3:
            raise AnnotationError(
                path,
                f"polygon has {n} point(s) in field points; a polygon needs at least 3.",
                obj=where,
                hint="Add points or delete it in labelme.",
            )
        return Instance(label, [pts], where, kind="polygon")
    if stype == "rectangle":
        if n not in (2, 4):
            raise AnnotationError(
                path, f"rectangle has {n} point(s) in field points; expected 2 corners.", obj=where
            )
        (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
        return Instance(label, [_box_polygon(x0, y0, x1, y1)], where, kind="box")
    if stype == "oriented_rectangle":
        return _oriented_rectangle(label, pts, path, where)
    if stype == "mask":
        return _mask_shape(label, pts, shape.get("mask"), path, where)
    if stype == "circle":
        if n != 2:
            raise AnnotationError(
                path,
                f"circle has {n} point(s) in field points; expected 2 (centre and a point on "
                "the rim).",
                obj=where,
            )
        (cx, cy), rim = pts
        r = float(np.hypot(*(rim - pts[0])))
        if r <= 0:
            raise AnnotationError(
                path,
                "circle has zero radius (its two points are the same).",
                obj=where,
                hint="Delete it or redraw it in labelme.",
            )
        return Instance(
            label,
            [circle_polygon(cx, cy, r)],
            where,
            kind="circle",
            circle=(float(cx), float(cy), r),
        )
    # point
    if n != 1:
        raise AnnotationError(
            path, f"point has {n} coordinate pairs in field points; expected 1.", obj=where
        )
    if run.point_box_size is None:
        raise AnnotationError(
            path,
            "is a point, but no box size for points was given.",
            obj=where,
            hint="Pass --point-box-size PX (the side of the square box drawn "
            "around each point, e.g. the typical particle diameter in pixels).",
        )
    (x, y), half = pts[0], run.point_box_size / 2
    return Instance(
        label,
        [_box_polygon(x - half, y - half, x + half, y + half)],
        where,
        kind="box",
        point=(float(x), float(y)),
    )


def _mask_shape(label: str, pts: np.ndarray, data: Any, path: Path, where: str) -> Instance:
    """labelme's ``mask`` shape: ``points`` are the top-left and bottom-right pixels of a box
    and ``mask`` a base64 PNG of that box (labelme pastes it at ``[y1:y2+1, x1:x2+1]`` with
    the corners truncated to integers)."""
    import cv2

    if len(pts) != 2:
        raise AnnotationError(path, f"mask has {len(pts)} point(s) in field points; expected "
                              "2 (the corners of its box).", obj=where)
    if not isinstance(data, str) or not data:
        raise AnnotationError(path, "mask shape without field mask (a base64 PNG of the "
                              "mask).", obj=where, hint="Paint the mask again in labelme.")
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise AnnotationError(path, "field mask is not base64 text (labelme writes a "
                              "base64 PNG).", obj=where) from None
    width, height, _ = image_bytes_info(blob, path, f"{where}: mask")  # pixel limit, undecoded
    (x1, y1), (x2, y2) = pts.astype(int)
    if (height, width) != (y2 - y1 + 1, x2 - x1 + 1):
        raise AnnotationError(
            path, f"field mask is {width} x {height} px, but its points span "
            f"{x2 - x1 + 1} x {y2 - y1 + 1} px (x {x1}..{x2}, y {y1}..{y2}).", obj=where)
    crop = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_UNCHANGED)
    if crop is None:
        raise AnnotationError(path, "field mask is not a readable PNG image.", obj=where)
    if crop.ndim == 3:
        crop = crop[..., 0] if crop.shape[2] < 3 else crop[..., :3].max(axis=2)
    box = _box_polygon(x1, y1, x2 + 1, y2 + 1)
    return Instance(label, [box], where, kind="mask", field="mask", mask=crop > 0,
                    mask_origin=(int(x1), int(y1)))


def _oriented_rectangle(label: str, pts: np.ndarray, path: Path, where: str) -> Instance:
    """labelme's rotated box (4 corners in drawing order) as a canonical detectron2 ``rbox``."""
    if len(pts) != 4:
        raise AnnotationError(path, f"oriented_rectangle has {len(pts)} point(s) in field "
                              "points; expected its 4 corners.", obj=where)
    e1, e2 = pts[1] - pts[0], pts[2] - pts[1]
    w, h = float(np.hypot(*e1)), float(np.hypot(*e2))
    if w <= 0 or h <= 0:
        raise AnnotationError(path, "oriented_rectangle has no area (repeated corners).",
                              obj=where, hint="Delete it or redraw it in labelme.")
    closing = pts[3] - pts[0]
    if abs(float(e1 @ e2)) > 0.02 * w * h or float(np.hypot(*(closing - e2))) > 0.02 * max(w, h):
        raise AnnotationError(path, "oriented_rectangle's 4 points in field points are not "
                              "the corners of a rectangle.", obj=where,
                              hint="Redraw it in labelme, or make it a polygon.")
    cx, cy = pts.mean(axis=0)
    # the w axis of a detectron2 box at angle t (degrees CCW, y down) is (cos t, -sin t)
    rbox = canonical_rbox(float(cx), float(cy), w, h, math.degrees(math.atan2(-e1[1], e1[0])))
    return Instance(label, [rbox_corners(rbox)], where, kind="rbox", rbox=rbox)


def _box_polygon(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)


# --------------------------------------------------------------------------------------------
# COCO -> labelme
# --------------------------------------------------------------------------------------------
def coco_to_labelme(
    coco: str | os.PathLike | Mapping[str, Any] | Sequence[Mapping[str, Any]],
    output_dir: str | os.PathLike,
    *,
    images_dir: str | os.PathLike | None = None,
    dataset: str | os.PathLike | Mapping[str, Any] | None = None,
    min_score: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
    image_data: Mapping[Any, bytes] | None = None,
    stems: Mapping[Any, str] | None = None,
) -> list[Path]:
    """Write one labelme JSON per image of a COCO file, e.g. to correct predictions in labelme.

    Parameters
    ----------
    coco : path, dict or list
        A COCO dataset (``images``, ``categories``, ``annotations``), or a list of detections
        as detectron2's ``coco_instances_results.json`` writes them (then ``dataset`` is needed).
    output_dir : path
        Folder for the labelme files, named ``<image stem>.json``; created if needed.
    images_dir : path, optional
        Folder that COCO ``file_name`` values are relative to. Default: the COCO file's
        ``info.image_root`` when it exists, else the COCO file's folder.
    dataset : path or dict, optional
        COCO dataset supplying ``images`` and ``categories`` for a list of detections.
    min_score : float, optional
        Leave out annotations whose ``score`` is below this.
    overwrite : bool
        Replace existing labelme files in ``output_dir``; by default that is an error, so
        hand corrections are never lost.
    progress : bool
        Show a progress bar.
    image_data : mapping, optional
        PNG (or JPEG) bytes per COCO image id, embedded as ``imageData``: labelme shows the
        embedded picture and keeps ``imagePath`` pointing at the image itself, so an 8-bit view
        of a 16-bit, float or DM4 image can be shown while the converter reads the original
        at full depth, with its calibration.
    stems : mapping, optional
        Name of the labelme file (without ``.json``) per COCO image id, instead of the image's
        stem (e.g. when two images of one batch share a stem).

    Returns
    -------
    list of Path
        The labelme files written, in image order, all or none
        (:func:`emdet.utils.atomic.atomic_write_many`).

    Raises
    ------
    ConversionError
        Before anything is written, naming the file and the field: JSON that is not strict,
        anything :func:`emdet.data.cocofile.check_coco` refuses (duplicate image ids, an image
        without ``height``, RLE whose ``size`` is not the image's, non-finite numbers), an
        image without ``file_name``, a ``circle``, ``point``, ``bbox`` or ``rbox`` more than
        one image size outside its image, existing labelme files without ``overwrite``.

    Notes
    -----
    Each annotation becomes shapes as follows: ``point`` key -> a point shape; ``circle`` key ->
    a circle; a polygon segmentation -> polygon shapes (a single 4-vertex polygon that is exactly
    its ``bbox`` -> a rectangle); an RLE mask -> its outlines along pixel edges as polygons, which rasterise back to the
    same pixels (holes are lost);
    an ``rbox`` (or a 5-value rotated ``bbox``, as detectron2's rotated models predict) without
    segmentation -> its 4-corner polygon; ``bbox`` only -> a rectangle. An
    instance with several polygons gets one ``group_id`` shared by its shapes. ``score`` goes to
    the shape's ``description`` as ``score=0.873``. The ``rbox`` itself is not kept (labelme has no
    rotated rectangle). Images without annotations get a file with no shapes.
    """
    if min_score is not None and not math.isfinite(min_score):
        raise ConversionError(f"--min-score is {min_score}; expected a finite number (0..1).")
    out_dir = Path(output_dir)
    check_output_path(out_dir, "--output", folder=True)
    coco, src_path = _load_coco(coco, dataset)
    name = str(src_path or "the COCO input")
    root = _image_root(coco, src_path, images_dir)
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    by_image: dict[Any, list[Mapping[str, Any]]] = {img["id"]: [] for img in coco["images"]}
    for ann in coco.get("annotations") or []:
        if min_score is not None and float(ann.get("score", 1.0)) < min_score:
            continue
        by_image[ann["image_id"]].append(ann)

    files: list[tuple[Path, bytes]] = []
    seen: dict[Path, str] = {}
    for img in tqdm(
        coco["images"], desc="Writing labelme files", unit="image", disable=not progress
    ):
        file_name = img["file_name"]
        stem = (stems or {}).get(img["id"])
        if not stem:
            stem = PurePosixPath(file_name.replace("\\", "/")).stem
            if int(img.get("n_frames") or 1) > 1 and img.get("frame") is not None:
                stem += f"_f{int(img['frame']):04d}"  # a frame of a stack, named as predict does
                if not (image_data and img["id"] in image_data):
                    logger.warning(
                        "%s: image %s is frame %s of a stack; labelme shows only a file's "
                        "first frame (predict.py --labelme writes each frame as its own TIFF).",
                        name, file_name, img["frame"])
        target = out_dir / (stem + ".json")
        if target in seen:
            raise ConversionError(
                f"{name}: images {seen[target]!r} and {file_name!r} would both "
                f"be written to {target}; labelme files are named after the "
                "image, so image names must differ."
            )
        seen[target] = file_name
        image_path = (root / file_name).resolve()
        if not _quiet_is_file(image_path):
            logger.warning(
                "%s: image %s not found; labelme will not open %s until it is there.",
                name,
                image_path,
                target.name,
            )
        shapes: list[dict[str, Any]] = []
        next_group = 1
        for ann in by_image[img["id"]]:
            new = _annotation_to_shapes(ann, cats[ann["category_id"]], img, name)
            if len(new) > 1:
                for s in new:
                    s["group_id"] = next_group
                next_group += 1
            shapes.extend(new)
        doc = {
            "version": LABELME_VERSION,
            "flags": {},
            "shapes": shapes,
            "imagePath": posix_relpath(image_path, out_dir.resolve()),
            "imageData": (base64.b64encode(image_data[img["id"]]).decode("ascii")
                          if image_data and img["id"] in image_data else None),
            "imageHeight": int(img["height"]),
            "imageWidth": int(img["width"]),
        }
        files.append((target, json_bytes(doc, indent=2, target=target)))
    refuse_existing([t for t, _ in files], overwrite)
    write_outputs(files)
    return [t for t, _ in files]


def _load_coco(
    coco: str | os.PathLike | Mapping[str, Any] | Sequence[Mapping[str, Any]],
    dataset: str | os.PathLike | Mapping[str, Any] | None,
) -> tuple[dict[str, Any], Path | None]:
    """The COCO dict to write from (detections merged with ``dataset``) and the file it came
    from, read strictly and checked with :func:`emdet.data.cocofile.check_coco` and
    :func:`_check_for_labelme` before anything is drawn."""
    src_path: Path | None = None
    if isinstance(coco, str | os.PathLike):
        src_path = Path(coco)
        coco = load_json(src_path, "COCO file")
    if isinstance(coco, Sequence) and not isinstance(coco, str | bytes):
        if dataset is None:
            raise ConversionError(
                f"{src_path or 'the COCO input'}: is a list of detections (like detectron2's "
                "coco_instances_results.json) without image names or sizes. Pass --dataset "
                "(dataset=) with the COCO file of those images, e.g. the test-set JSON."
            )
        ds_path = None
        if isinstance(dataset, str | os.PathLike):
            ds_path = Path(dataset)
            dataset = load_json(ds_path, "COCO dataset file (--dataset)")
        ds_name = ds_path or "the --dataset"
        if not isinstance(dataset, Mapping):
            raise ConversionError(
                f"{ds_name}: --dataset must be a COCO dataset (a JSON object with 'images' and "
                f"'categories'), got a JSON {type(dataset).__name__}."
            )
        base = {"images": dataset.get("images"), "categories": dataset.get("categories")}
        _check(base | {"annotations": []}, ds_name)
        coco = base | {"annotations": list(coco), "info": dataset.get("info", {})}
    name = src_path or "the COCO input"
    if not isinstance(coco, Mapping):
        raise ConversionError(
            f"{name}: is a JSON {type(coco).__name__}, not a COCO dataset (a JSON object with "
            "'images' and 'categories')."
        )
    coco = _check(coco, name)
    _check_for_labelme(coco, str(name))
    return coco, src_path


def _check(coco: Mapping[str, Any], source: Any) -> dict[str, Any]:
    """:func:`emdet.data.cocofile.check_coco`, with detectron2's rotated ``bbox`` (5 values)
    checked as an ``rbox``; a problem becomes a :class:`ConversionError`."""
    from emdet.data.cocofile import CocoFormatError, check_coco

    view = dict(coco)
    anns = coco.get("annotations")
    if isinstance(anns, list):
        view["annotations"] = [_as_checkable(a) for a in anns]
    try:
        check_coco(view, source)
    except CocoFormatError as exc:
        raise ConversionError(f"{exc}.") from None
    return dict(coco)


def _as_checkable(ann: Any) -> Any:
    if isinstance(ann, Mapping) and ann.get("rbox") is None:
        bbox = ann.get("bbox")
        if isinstance(bbox, list) and len(bbox) == 5:
            return {k: v for k, v in ann.items() if k != "bbox"} | {"rbox": bbox}
    return ann


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _check_for_labelme(coco: Mapping[str, Any], name: str) -> None:
    """What :func:`coco_to_labelme` needs beyond :func:`~emdet.data.cocofile.check_coco`: a
    usable ``file_name`` on every image, a valid ``circle``, and no ``point``, ``circle``,
    ``bbox`` or ``rbox`` further than one image size outside its image."""
    images = {}
    for i, img in enumerate(coco["images"]):
        where = f"{name}: images[{i}] (id {img['id']!r})"
        fname = img.get("file_name")
        if not isinstance(fname, str) or not fname.strip():
            raise ConversionError(
                f"{where}: 'file_name' is {fname!r:.60}; labelme files are named after the "
                "image, so every image needs its file name."
            )
        stem = PurePosixPath(fname.replace("\\", "/")).stem
        if "\x00" in fname or stem in ("", ".", ".."):
            raise ConversionError(
                f"{where}: 'file_name' {fname!r:.80} has no usable image name to name the "
                "labelme file after."
            )
        images[img["id"]] = img
    for k, ann in enumerate(coco.get("annotations") or []):
        where = f"{name}: annotations[{k}]" + (f" (id {ann['id']!r})" if "id" in ann else "")
        img = images[ann["image_id"]]
        width, height = float(img["width"]), float(img["height"])
        circle = ann.get("circle")
        if circle is not None and not (
            isinstance(circle, list) and len(circle) == 3 and all(map(_finite, circle))
            and circle[2] > 0
        ):
            raise ConversionError(
                f"{where}: 'circle' must be [cx, cy, r], finite numbers with r > 0, got "
                f"{circle!r:.80}."
            )
        for key in ("point", "circle", "bbox", "rbox"):
            value = ann.get(key)
            if value is None and key == "rbox" and len(ann.get("bbox") or ()) == 5:
                value = ann["bbox"]
            if value is None:
                continue
            x, y = float(value[0]), float(value[1])
            if not (-width <= x <= 2 * width and -height <= y <= 2 * height):
                raise ConversionError(
                    f"{where}: '{key}' puts ({x:g}, {y:g}) more than one image size outside "
                    f"the {int(width)} x {int(height)} px image; the file is corrupt or belongs "
                    "to another image."
                )


def _quiet_is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _image_root(coco: Mapping[str, Any], src: Path | None, images_dir: Any) -> Path:
    if images_dir is not None:
        return Path(images_dir)
    info = coco.get("info")
    info_root = info.get("image_root") if isinstance(info, Mapping) else None
    if isinstance(info_root, str) and info_root and _quiet_is_dir(Path(info_root)):
        return Path(info_root)
    return src.parent if src is not None else Path.cwd()


def _quiet_is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def _annotation_to_shapes(
    ann: Mapping[str, Any], label: str, img: Mapping[str, Any], name: str
) -> list[dict[str, Any]]:
    def shape(points: Any, stype: str) -> dict[str, Any]:
        pts = [[float(x), float(y)] for x, y in np.asarray(points, float).reshape(-1, 2)]
        out = {
            "label": label,
            "points": pts,
            "group_id": None,
            "description": "",
            "shape_type": stype,
            "flags": {},
        }
        if "score" in ann:
            out["description"] = f"score={float(ann['score']):.4g}"
        return out

    if ann.get("point") is not None:
        return [shape([ann["point"]], "point")]
    if ann.get("circle") is not None:
        cx, cy, r = ann["circle"]
        return [shape([[cx, cy], [cx + r, cy]], "circle")]
    seg = ann.get("segmentation")
    if isinstance(seg, Mapping):
        polys = _rle_to_polygons(seg, int(img["height"]), int(img["width"]))
        if not polys:
            logger.warning("%s: annotation %s has an empty mask; skipped.", name, ann.get("id"))
            return []
        return [shape(p, "polygon") for p in polys]
    if isinstance(seg, list) and seg:
        polys = [np.asarray(p, float).reshape(-1, 2) for p in seg if len(p) >= 6]
        if (
            len(polys) == 1
            and len(ann.get("bbox") or ()) == 4
            and _is_bbox_polygon(polys[0], ann["bbox"])
        ):
            return [shape(polys[0][[0, 2]], "rectangle")]
        if polys:
            return [shape(p, "polygon") for p in polys]
    rbox = ann.get("rbox")
    if rbox is None and ann.get("bbox") is not None and len(ann["bbox"]) == 5:
        rbox = ann["bbox"]  # detectron2's rotated predictions: bbox = [cx, cy, w, h, angle]
    if rbox is not None:
        return [shape(rbox_corners(rbox), "polygon")]
    if ann.get("bbox") is not None:
        x, y, w, h = (float(v) for v in ann["bbox"])
        return [shape([[x, y], [x + w, y + h]], "rectangle")]
    logger.warning(
        "%s: annotation %s has no segmentation, rbox or bbox; skipped.", name, ann.get("id")
    )
    return []


def _is_bbox_polygon(poly: np.ndarray, bbox: Sequence[float]) -> bool:
    x, y, w, h = (float(v) for v in bbox)
    corners = [[x, y], [x + w, y], [x + w, y + h], [x, y + h]]
    return len(poly) == 4 and np.allclose(poly, corners, rtol=0, atol=1e-6)


def _rle_to_polygons(seg: Mapping[str, Any], height: int, width: int) -> list[np.ndarray]:
    """Outer outlines of an RLE mask along pixel edges: the union of its pixel squares.

    Such a polygon rasterises back to the same pixels (pycocotools), so a mask taken through
    labelme and back keeps its area. Contours through the boundary pixels' centres (cv2 or
    detectron2's ``GenericMask.mask_to_polygons``, used here before) lose half a pixel all
    round: 1 px of diameter, 10 % of a 10 px particle and 20 % of its area. Holes are dropped
    (labelme polygons have none); pieces touching only at a corner become separate polygons.
    """
    import shapely
    from pycocotools import mask as mask_utils

    rle = dict(seg)
    if isinstance(rle.get("counts"), list):
        rle = mask_utils.frPyObjects(rle, height, width)
    elif isinstance(rle.get("counts"), str):
        rle["counts"] = rle["counts"].encode("ascii")
    x0, y0, w, h = (int(v) for v in mask_utils.toBbox(rle))
    if w == 0 or h == 0:
        return []
    mask = mask_utils.decode(rle)[y0:y0 + h, x0:x0 + w].astype(np.int8)
    steps = np.diff(np.pad(mask, ((0, 0), (1, 1))), axis=1)  # +1 where a run starts, -1 after
    rows, starts = np.nonzero(steps == 1)
    _, ends = np.nonzero(steps == -1)  # row-major order: the k-th end closes the k-th start
    rows, starts, ends = rows + y0, starts + x0, ends + x0
    union = shapely.union_all(shapely.box(starts, rows, ends, rows + 1)).simplify(0)
    parts = getattr(union, "geoms", [union])
    return [np.asarray(p.exterior.coords, dtype=float)[:-1] for p in parts
            if p.geom_type == "Polygon" and p.area > 0]
