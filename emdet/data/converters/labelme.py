"""labelme JSON <-> COCO.

Reading (``--format labelme``), one JSON per image:

* ``polygon`` (>= 3 points) -> a polygon; ``rectangle`` (2 corner points) -> a box;
  ``circle`` (centre, rim point) -> a :data:`~._geometry.CIRCLE_VERTICES`-gon, with
  ``circle: [cx, cy, r]`` kept in the annotation; ``point`` -> a square box of ``point_box_size`` px
  centred on it (clipped to the image), with ``point: [x, y]`` kept in the annotation;
  ``line`` / ``linestrip`` -> skipped with a warning. Any other shape type is an error.
* Shapes with the same ``group_id`` *and* label form one instance whose segmentation holds all
  their polygons (points are never grouped).
* ``imagePath`` is resolved relative to the JSON (then in ``images_dir``); if the image is not
  there but ``imageData`` is embedded, the embedded image is written to the extraction folder and
  used. The image's size is checked against ``imageWidth`` / ``imageHeight``.

Writing (:func:`coco_to_labelme`): one labelme JSON per COCO image, so predictions can be corrected in
labelme; see its docstring for how each annotation becomes shapes.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from tqdm import tqdm

from ._common import (
    AnnotationError,
    ConversionError,
    ImageRecord,
    Instance,
    Run,
    image_bytes_info,
    image_size,
    json_bytes,
    logger,
    posix_relpath,
    to_float,
    write_files_atomically,
)
from ._geometry import circle_polygon, rbox_corners

#: The labelme version written into the files made by :func:`coco_to_labelme`.
LABELME_VERSION = "5.2.1"

SHAPE_TYPES = ("polygon", "rectangle", "circle", "point", "line", "linestrip")
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
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            path,
            f"is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).",
            hint="Re-save it from labelme or repair it in a text editor.",
        ) from None
    except UnicodeDecodeError:
        raise AnnotationError(
            path, "is not UTF-8 text, so it is not a labelme JSON file."
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        raise AnnotationError(
            path,
            "is not a labelme file: it has no 'shapes' list.",
            hint="Keep only labelme JSON files in the input folder (move other "
            "JSON files, e.g. an earlier COCO output, elsewhere).",
        )
    image, width, height = _resolve_labelme_image(path, doc, run)
    for key, actual in (("imageWidth", width), ("imageHeight", height)):
        declared = doc.get(key)
        if declared is not None and to_float(declared, path, "", key) != actual:
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
        if gid is None or inst.point is not None:
            rec.instances.append(inst)
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
        raise AnnotationError(path, f"field imagePath is {raw!r}; expected a file name.")
    rel = raw.replace("\\", "/")
    name = PurePosixPath(rel).name
    candidates: list[Path] = []
    if rel:
        candidates += [path.parent / rel, path.parent / name]
        if run.images_dir is not None:
            candidates += [run.images_dir / rel, run.images_dir / name]
    for cand in candidates:
        if cand.is_file():
            width, height = image_size(cand)
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
        blob = base64.b64decode(data, validate=True)
        width, height, fmt = image_bytes_info(blob)
    except (binascii.Error, ValueError, OSError, TypeError):
        raise AnnotationError(
            path,
            "field imageData is not a base64-encoded image, and the "
            f"image file {raw!r} is missing.",
            hint="Re-save the file from labelme with the image present.",
        ) from None
    target = run.extract_dir / _embedded_name(name or path.stem, fmt)
    target = target.resolve()
    if target in run.extracted and run.extracted[target] != blob:
        raise AnnotationError(
            path,
            f"its embedded image would be written to {target}, but another "
            "file's different embedded image has the same name.",
            hint="Give the images distinct names in 'imagePath'.",
        )
    run.extracted[target] = blob
    return target, width, height


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
            "is not a labelme shape (expected an object with label, points, shape_type).",
            obj=f"shape {i + 1}",
        )
    label = shape.get("label")
    stype = shape.get("shape_type") or "polygon"
    where = f"shape {i + 1} ({label!r}, {stype})"
    if not isinstance(label, str) or not label.strip():
        raise AnnotationError(path, f"field label is {label!r}; expected a class name.", obj=where)
    label = label.strip()
    if stype in _IGNORED_SHAPES:
        run.warn(f"{path}: {where}: {stype} shapes are not objects; skipped.")
        return None
    if stype not in SHAPE_TYPES:
        raise AnnotationError(
            path,
            f"unknown shape_type {stype!r}; expected one of polygon, rectangle, circle, "
            "point (line and linestrip are skipped).",
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
    pts = np.array([[to_float(v, path, where, "points") for v in p] for p in raw_points], float)
    pts = pts.reshape(-1, 2)
    n = len(pts)
    if stype == "polygon":
        if n < 3:
            raise AnnotationError(
                path,
                f"polygon has {n} point(s); a polygon needs at least 3.",
                obj=where,
                hint="Add points or delete it in labelme.",
            )
        return Instance(label, [pts], where, kind="polygon")
    if stype == "rectangle":
        if n not in (2, 4):
            raise AnnotationError(
                path, f"rectangle has {n} point(s); expected 2 corners.", obj=where
            )
        (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
        return Instance(label, [_box_polygon(x0, y0, x1, y1)], where, kind="box")
    if stype == "circle":
        if n != 2:
            raise AnnotationError(
                path,
                f"circle has {n} point(s); expected 2 (centre and a point on the rim).",
                obj=where,
            )
        (cx, cy), rim = pts
        r = float(np.hypot(*(rim - pts[0])))
        if r <= 0:
            raise AnnotationError(
                path,
                "circle has zero radius.",
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
        raise AnnotationError(path, f"point has {n} coordinates pairs; expected 1.", obj=where)
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

    Returns
    -------
    list of Path
        The labelme files written, in image order.

    Notes
    -----
    Each annotation becomes shapes as follows: ``point`` key -> a point shape; ``circle`` key ->
    a circle; a polygon segmentation -> polygon shapes (a single 4-vertex polygon that is exactly
    its ``bbox`` -> a rectangle); an RLE mask -> its outer contours as polygons (holes are lost);
    an ``rbox`` (or a 5-value rotated ``bbox``, as detectron2's rotated models predict) without
    segmentation -> its 4-corner polygon; ``bbox`` only -> a rectangle. An
    instance with several polygons gets one ``group_id`` shared by its shapes. ``score`` goes to
    the shape's ``description`` as ``score=0.873``. The ``rbox`` itself is not kept (labelme has no
    rotated rectangle). Images without annotations get a file with no shapes.
    """
    src_path: Path | None = None
    if isinstance(coco, str | os.PathLike):
        src_path = Path(coco)
        coco = _load_json(src_path, "COCO file")
    if isinstance(coco, Sequence) and not isinstance(coco, str | bytes):
        if dataset is None:
            raise ConversionError(
                f"{src_path or 'the COCO input'}: is a list of detections (like detectron2's "
                "coco_instances_results.json) without image names or sizes. Pass --dataset "
                "(dataset=) with the COCO file of those images, e.g. the test-set JSON."
            )
        detections = list(coco)
        ds_path = None
        if isinstance(dataset, str | os.PathLike):
            ds_path = Path(dataset)
            dataset = _load_json(ds_path, "COCO dataset file")
        coco = {
            "images": dataset.get("images"),
            "categories": dataset.get("categories"),
            "annotations": detections,
            "info": dataset.get("info", {}),
        }
        src_path = ds_path or src_path
    name = str(src_path or "the COCO input")
    if (
        not isinstance(coco, Mapping)
        or not isinstance(coco.get("images"), list)
        or not isinstance(coco.get("categories"), list)
    ):
        raise ConversionError(
            f"{name}: is not a COCO dataset: expected 'images' and 'categories' lists."
        )
    out_dir = Path(output_dir)
    root = _image_root(coco, src_path, images_dir)
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    by_image: dict[Any, list[Mapping[str, Any]]] = {img["id"]: [] for img in coco["images"]}
    for k, ann in enumerate(coco.get("annotations") or []):
        if ann.get("image_id") not in by_image:
            raise ConversionError(
                f"{name}: annotation {ann.get('id', k)} refers to image_id "
                f"{ann.get('image_id')!r}, which is not in 'images'."
            )
        if ann.get("category_id") not in cats:
            raise ConversionError(
                f"{name}: annotation {ann.get('id', k)} has category_id "
                f"{ann.get('category_id')!r}, which is not in 'categories'."
            )
        if min_score is not None and float(ann.get("score", 1.0)) < min_score:
            continue
        by_image[ann["image_id"]].append(ann)

    files: list[tuple[Path, bytes]] = []
    seen: dict[Path, str] = {}
    for img in tqdm(
        coco["images"], desc="Writing labelme files", unit="image", disable=not progress
    ):
        file_name = str(img["file_name"])
        target = out_dir / (PurePosixPath(file_name.replace("\\", "/")).stem + ".json")
        if target in seen:
            raise ConversionError(
                f"{name}: images {seen[target]!r} and {file_name!r} would both "
                f"be written to {target}; labelme files are named after the "
                "image, so image names must differ."
            )
        seen[target] = file_name
        image_path = (root / file_name).resolve()
        if not image_path.is_file():
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
            "imageData": None,
            "imageHeight": int(img["height"]),
            "imageWidth": int(img["width"]),
        }
        files.append((target, json_bytes(doc, indent=2)))
    existing = [t for t, _ in files if t.exists()]
    if existing and not overwrite:
        shown = ", ".join(t.name for t in existing[:5]) + (" ..." if len(existing) > 5 else "")
        raise ConversionError(
            f"{out_dir}: already holds labelme files for these images ({shown}). "
            "Pass --overwrite to replace them, or choose another output folder."
        )
    write_files_atomically(files)
    return [t for t, _ in files]


def _load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConversionError(f"{path}: {what} not found.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{path}: {what} is not valid JSON ({exc}).") from None


def _image_root(coco: Mapping[str, Any], src: Path | None, images_dir: Any) -> Path:
    if images_dir is not None:
        return Path(images_dir)
    info_root = (coco.get("info") or {}).get("image_root")
    if info_root and Path(info_root).is_dir():
        return Path(info_root)
    return src.parent if src is not None else Path.cwd()


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
    """Outer contours of an RLE mask as polygons in pixel-edge coordinates (``+0.5``, as
    detectron2's ``GenericMask.mask_to_polygons`` does)."""
    import cv2
    from pycocotools import mask as mask_utils

    rle = dict(seg)
    if isinstance(rle.get("counts"), list):
        rle = mask_utils.frPyObjects(rle, height, width)
    elif isinstance(rle.get("counts"), str):
        rle["counts"] = rle["counts"].encode("ascii")
    mask = np.ascontiguousarray(mask_utils.decode(rle).astype(np.uint8))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1, 2).astype(float) + 0.5 for c in contours if len(c) >= 3]
