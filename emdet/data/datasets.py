"""Register EM data sets (COCO json + images) with detectron2.

A data set is a folder under the data sets root (``$EMDET_DATASETS``, default ``datasets/``
relative to the working directory)::

    datasets/<name>/
        images/...                         image files; COCO ``file_name`` is relative to this
        annotations/{train,val,test}.json  COCO instances json, one per split
        masks/...                          optional per-pixel label images (``sem_seg_file_name``)
        dataset.yaml                       optional: classes, evaluator_type, pixel_size, ...

Each split ``annotations/<split>.json`` becomes the detectron2 data set ``<name>_<split>``
(e.g. ``vesicles_synth_train``). Registration is lazy: files are read when
``DatasetCatalog.get`` is called, and then checked, with errors that name the file and field.

Rotated data sets (``rotated: true``) keep each annotation's ``rbox = [cx, cy, w, h,
angle_deg]`` (see :mod:`emdet.data.geometry`) and load it as ``bbox`` with
``BoxMode.XYWHA_ABS``; point data sets keep ``point = [x, y]``; images with a
``sem_seg_file_name`` (relative to ``masks/``) get it as an absolute path for detectron2's
semantic segmentation.
"""

from __future__ import annotations

import json
import logging
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.structures import BoxMode

from emdet.data.cocofile import CocoFormatError, check_annotation, check_coco

__all__ = [
    "ENV_VAR",
    "EVALUATOR_TYPES",
    "SPLITS",
    "DatasetFormatError",
    "DatasetSpec",
    "get_datasets_root",
    "load_em_coco_json",
    "read_dataset_yaml",
    "register_all_from_root",
    "register_dataset",
    "register_datasets",
    "unregister_dataset",
]

logger = logging.getLogger(__name__)

ENV_VAR = "EMDET_DATASETS"
EVALUATOR_TYPES = ("coco", "rotated", "points", "sem_seg")
SPLITS = ("train", "val", "test")
DATASET_YAML = "dataset.yaml"


class DatasetFormatError(ValueError):
    """A data set file is missing a field or has a wrong value; the message says where."""


def get_datasets_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data sets root: ``root`` if given, else ``$EMDET_DATASETS``, else ``datasets``.

    Relative paths are relative to the current working directory.
    """
    if root is None:
        root = os.environ.get(ENV_VAR) or "datasets"
    return Path(root).expanduser()


@dataclass(frozen=True)
class DatasetSpec:
    """What emdet needs to know about one data set folder.

    Attributes
    ----------
    name : str
        Registered as ``<name>_<split>`` for each split.
    dirname : str, optional
        Folder relative to the data sets root, or absolute; default ``name``.
    classes : tuple of str
        Object classes in category-id order; empty: read from the json's ``categories``.
    evaluator_type : {"coco", "rotated", "points", "sem_seg"}
    pixel_size : float
        Physical size of one pixel, in ``unit`` (1.0 "px" means uncalibrated).
    unit : str
        e.g. "nm".
    rotated : bool
        Annotations carry ``rbox`` and are loaded as ``BoxMode.XYWHA_ABS``. Implied by
        ``evaluator_type="rotated"``.
    stuff_classes : tuple of str
        Names of the values in ``masks/`` label images (needed for "sem_seg").
    ignore_label : int
        Label value ignored by semantic segmentation.
    splits : tuple of str, optional
        Splits to register; default every ``annotations/*.json``.
    """

    name: str
    dirname: str | None = None
    classes: tuple[str, ...] = ()
    evaluator_type: str = "coco"
    pixel_size: float = 1.0
    unit: str = "px"
    rotated: bool = False
    stuff_classes: tuple[str, ...] = ()
    ignore_label: int = 255
    splits: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        set_ = partial(object.__setattr__, self)
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ValueError(
                f"data set name must be a non-empty string without '/', got {self.name!r}"
            )
        if self.dirname is not None:
            set_("dirname", os.fspath(self.dirname))
        set_("classes", tuple(self.classes))
        set_("stuff_classes", tuple(self.stuff_classes))
        if self.splits is not None:
            set_("splits", tuple(self.splits))
        if self.evaluator_type not in EVALUATOR_TYPES:
            raise ValueError(
                f"data set {self.name!r}: evaluator_type must be one of {EVALUATOR_TYPES}, "
                f"got {self.evaluator_type!r}"
            )
        if self.evaluator_type == "rotated":
            set_("rotated", True)
        if self.evaluator_type == "sem_seg" and not self.stuff_classes:
            raise ValueError(
                f"data set {self.name!r}: evaluator_type 'sem_seg' needs stuff_classes, the "
                "names of the label values in masks/ (0, 1, ...)"
            )
        size = self.pixel_size
        if isinstance(size, bool) or not isinstance(size, numbers.Real) or not size > 0:
            raise ValueError(
                f"data set {self.name!r}: pixel_size must be a number > 0, got {self.pixel_size!r}"
            )
        set_("pixel_size", float(self.pixel_size))

    def directory(self, root: str | os.PathLike[str] | None = None) -> Path:
        """Absolute path of the data set folder."""
        path = Path(self.dirname if self.dirname is not None else self.name).expanduser()
        if not path.is_absolute():
            path = get_datasets_root(root) / path
        return Path(os.path.abspath(path))


# name -> (spec, data set folder, registered split names)
_REGISTERED: dict[str, tuple[DatasetSpec, Path, list[str]]] = {}


def _fail(where: Path | str, what: str) -> DatasetFormatError:
    return DatasetFormatError(f"{where}: {what}")


def _read_json(json_file: Path) -> Any:
    if not json_file.is_file():
        raise FileNotFoundError(
            f"annotation file {json_file} does not exist. Each split needs "
            "<dataset>/annotations/<split>.json (COCO format); see datasets/README.md."
        )
    try:
        with open(json_file, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise _fail(
            json_file,
            f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}). Re-export the "
            "annotations or check the file was copied completely.",
        ) from None


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _numbers(x: Any, n: int) -> bool:
    return isinstance(x, list | tuple) and len(x) == n and all(_is_number(v) for v in x)


def _check_images(data: dict, json_file: Path) -> None:
    try:  # image sizes within the pixel limit, calibration numbers finite
        check_coco({"images": data["images"], "categories": []}, json_file)
    except CocoFormatError as e:
        raise DatasetFormatError(str(e)) from None


def _check_coco(
    data: Any,
    json_file: Path,
    image_root: Path,
    *,
    classes: Sequence[str] | None,
    rotated: bool,
    points: bool,
    allow_empty: bool,
    check_files: bool,
    mask_root: Path | None,
) -> None:
    """Raise :class:`DatasetFormatError` naming file and field for anything detectron2 would
    trip over, or that would silently give wrong training data."""
    if not isinstance(data, dict):
        raise _fail(
            json_file,
            f"expected a JSON object with images/annotations/categories, got {type(data).__name__}",
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise _fail(
                json_file, f"field '{key}' is missing or not a list (COCO instances format)"
            )
    cat_ids: dict[Any, str] = {}
    for i, cat in enumerate(data["categories"]):
        if (
            not isinstance(cat, dict)
            or not isinstance(cat.get("id"), int)
            or not isinstance(cat.get("name"), str)
        ):
            raise _fail(
                json_file, f"categories[{i}] needs an integer 'id' and a string 'name', got {cat!r}"
            )
        if cat["id"] in cat_ids:
            raise _fail(json_file, f"categories: id {cat['id']} is used twice")
        cat_ids[cat["id"]] = cat["name"]
    if not cat_ids:
        raise _fail(json_file, "field 'categories' is empty; list the object classes there")
    names = [cat_ids[k] for k in sorted(cat_ids)]
    if classes and list(classes) != names:
        raise _fail(
            json_file,
            f"field 'categories' names {names} (in id order), but the data set's classes "
            f"(dataset.yaml or DatasetSpec.classes) are {list(classes)}; make them agree",
        )
    image_ids: dict[int, dict] = {}
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict):
            raise _fail(json_file, f"images[{i}] is not an object")
        for key, typ in (("id", int), ("file_name", str), ("height", int), ("width", int)):
            if not isinstance(img.get(key), typ) or isinstance(img.get(key), bool):
                raise _fail(
                    json_file,
                    f"images[{i}] field '{key}' is missing or not {typ.__name__}: {img.get(key)!r}",
                )
        if img["id"] in image_ids:
            raise _fail(json_file, f"images: id {img['id']} is used twice")
        image_ids[img["id"]] = img
        if check_files:
            path = image_root / img["file_name"]
            if not path.is_file():
                raise _fail(
                    json_file,
                    f"image id {img['id']} 'file_name' {img['file_name']!r}: {path} does not "
                    f"exist (file names are relative to {image_root})",
                )
            mask = img.get("sem_seg_file_name")
            if mask is not None and mask_root is not None and not (mask_root / mask).is_file():
                raise _fail(
                    json_file,
                    f"image id {img['id']} 'sem_seg_file_name' {mask!r}: {mask_root / mask} "
                    "does not exist",
                )
    _check_images(data, json_file)
    if not data["annotations"] and not allow_empty:
        raise _fail(
            json_file,
            "field 'annotations' is empty: no object is annotated in this split, so it "
            "cannot be used for training or evaluation. Check the export or the split.",
        )
    ann_ids = set()
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise _fail(json_file, f"annotations[{i}] is not an object")
        aid = ann.get("id")
        where = f"annotation id {aid}" if aid is not None else f"annotations[{i}]"
        if not isinstance(aid, int) or isinstance(aid, bool):
            raise _fail(json_file, f"{where}: field 'id' is missing or not an integer")
        if aid in ann_ids:
            raise _fail(json_file, f"annotations: id {aid} is used twice")
        ann_ids.add(aid)
        if ann.get("image_id") not in image_ids:
            raise _fail(
                json_file, f"{where}: 'image_id' {ann.get('image_id')!r} is not an id in 'images'"
            )
        if ann.get("category_id") not in cat_ids:
            raise _fail(
                json_file,
                f"{where}: 'category_id' {ann.get('category_id')!r} is not in 'categories' "
                f"(ids {sorted(cat_ids)})",
            )
        bbox = ann.get("bbox")
        if not _numbers(bbox, 4) or bbox[2] < 0 or bbox[3] < 0:
            raise _fail(
                json_file,
                f"{where}: 'bbox' must be [x, y, width, height] with width, height >= 0, "
                f"got {bbox!r}",
            )
        if rotated:
            rbox = ann.get("rbox")
            if not _numbers(rbox, 5) or rbox[2] < 0 or rbox[3] < 0:
                raise _fail(
                    json_file,
                    f"{where}: rotated data sets need 'rbox' = [cx, cy, w, h, angle_deg] "
                    f"(detectron2 XYWHA, angle counter-clockwise), got {rbox!r}",
                )
        if points and not _numbers(ann.get("point"), 2):
            raise _fail(
                json_file,
                f"{where}: point data sets need 'point' = [x, y], got {ann.get('point')!r}",
            )
        segm = ann.get("segmentation")
        if segm is not None and not isinstance(segm, list | dict):
            raise _fail(
                json_file, f"{where}: 'segmentation' must be polygons (list) or RLE (object)"
            )
        if ann.get("iscrowd", 0) not in (0, 1):
            raise _fail(json_file, f"{where}: 'iscrowd' must be 0 or 1, got {ann.get('iscrowd')!r}")
        try:  # finite numbers, polygons and RLE that fit the image (pycocotools trusts them)
            check_annotation(ann, i, image_ids[ann["image_id"]], need_bbox=True)
        except CocoFormatError as e:
            raise _fail(json_file, str(e)) from None


def load_em_coco_json(
    json_file: str | os.PathLike[str],
    image_root: str | os.PathLike[str],
    dataset_name: str | None = None,
    *,
    classes: Sequence[str] | None = None,
    evaluator_type: str = "coco",
    rotated: bool = False,
    mask_root: str | os.PathLike[str] | None = None,
    check_files: bool = True,
) -> list[dict[str, Any]]:
    """Check a COCO json and load it as detectron2 dataset dicts.

    Parameters
    ----------
    json_file, image_root : path
        The annotations and the folder that image ``file_name`` s are relative to.
    dataset_name : str, optional
        Passed to :func:`detectron2.data.datasets.load_coco_json` (sets ``thing_classes`` and
        ``thing_dataset_id_to_contiguous_id`` in its metadata).
    classes : sequence of str, keyword-only
        If given, the json's category names (in id order) must equal it.
    evaluator_type : keyword-only
        "points" requires a ``point`` per annotation; "sem_seg" allows splits without objects.
    rotated : bool, keyword-only
        Load ``rbox`` as ``bbox`` with ``BoxMode.XYWHA_ABS``.
    mask_root : path, keyword-only
        Folder that ``sem_seg_file_name`` s are relative to (default ``image_root/../masks``).
    check_files : bool, keyword-only
        Check that every image (and mask) file exists.

    Returns
    -------
    list of dict
        detectron2 standard dataset dicts, sorted by image id; each may also carry
        ``sem_seg_file_name`` and ``pixel_size``/``unit``; annotations may carry ``point``.
    """
    json_file = Path(json_file)
    image_root = Path(image_root)
    mask_root = Path(mask_root) if mask_root is not None else image_root.parent / "masks"
    data = _read_json(json_file)
    _check_coco(
        data,
        json_file,
        image_root,
        classes=classes,
        rotated=rotated,
        points=evaluator_type == "points",
        allow_empty=evaluator_type == "sem_seg",
        check_files=check_files,
        mask_root=mask_root,
    )
    extra = ["rbox"] if rotated else []
    if any("point" in a for a in data["annotations"]):
        extra.append("point")
    records = load_coco_json(
        str(json_file), str(image_root), dataset_name, extra_annotation_keys=extra
    )
    from emdet.data.cocofile import crowd_as_objects

    # CVAT's all-crowd masks are objects (emdet.data.cocofile); the evaluator applies the same
    if crowd_as_objects([obj for r in records for obj in r["annotations"]], json_file):
        for record in records:
            for obj in record["annotations"]:
                obj["iscrowd"] = 0
    images = {img["id"]: img for img in data["images"]}
    for record in records:
        img = images[record["image_id"]]
        if "sem_seg_file_name" in img:
            record["sem_seg_file_name"] = str(mask_root / img["sem_seg_file_name"])
        for key in ("pixel_size", "unit", "frame", "n_frames"):  # frame: of a stack's file
            if key in img:
                record[key] = img[key]
        if rotated:
            for obj in record["annotations"]:
                obj["bbox"] = [float(v) for v in obj.pop("rbox")]
                obj["bbox_mode"] = BoxMode.XYWHA_ABS
    return records


def _find_splits(ann_dir: Path, wanted: Sequence[str] | None) -> list[str]:
    if wanted is not None:
        return [s for s in wanted if (ann_dir / f"{s}.json").is_file()]
    stems = sorted(p.stem for p in ann_dir.glob("*.json") if p.is_file())
    return [s for s in SPLITS if s in stems] + [s for s in stems if s not in SPLITS]


def _json_categories(json_file: Path) -> list[str]:
    data = _read_json(json_file)
    cats = data.get("categories") if isinstance(data, dict) else None
    if (
        not isinstance(cats, list)
        or not cats
        or not all(
            isinstance(c, dict) and isinstance(c.get("id"), int) and isinstance(c.get("name"), str)
            for c in cats
        )
    ):
        raise _fail(
            json_file, "field 'categories' is missing, empty, or lacks integer 'id'/string 'name'"
        )
    return [c["name"] for c in sorted(cats, key=lambda c: c["id"])]


def _spec_diff(a: DatasetSpec, b: DatasetSpec) -> str:
    return ", ".join(
        f"{f.name}: {getattr(a, f.name)!r} -> {getattr(b, f.name)!r}"
        for f in fields(DatasetSpec)
        if getattr(a, f.name) != getattr(b, f.name)
    )


def _register(spec: DatasetSpec, root: str | os.PathLike[str] | None) -> list[str]:
    folder = spec.directory(root)
    previous = _REGISTERED.get(spec.name)
    if previous is not None:
        old_spec, old_folder, _ = previous
        # The same folder may be named relative to the root or absolutely: compare folders.
        if replace(old_spec, dirname=None) != replace(spec, dirname=None) or old_folder != folder:
            diff = _spec_diff(replace(old_spec, dirname=None), replace(spec, dirname=None))
            diff = diff or f"folder: {old_folder} -> {folder}"
            raise ValueError(
                f"data set {spec.name!r} is already registered differently ({diff}); call "
                f"emdet.data.unregister_dataset({spec.name!r}) first, or use another name"
            )
    ann_dir = folder / "annotations"
    splits = _find_splits(ann_dir, spec.splits)
    if not splits:
        wanted = ", ".join(spec.splits or SPLITS)
        raise FileNotFoundError(
            f"data set {spec.name!r}: no annotation json for splits ({wanted}) in {ann_dir}. "
            "Expected <dataset>/annotations/<split>.json; generate one with "
            "tools/make_synthetic.py or see datasets/README.md."
        )
    done = previous[2] if previous is not None else []
    classes = spec.classes or tuple(_json_categories(ann_dir / f"{splits[0]}.json"))
    for split in splits:
        if split in done:
            continue
        name = f"{spec.name}_{split}"
        if name in DatasetCatalog.list():
            raise ValueError(
                f"{name!r} is already in detectron2's DatasetCatalog, registered by other code; "
                "choose another data set name"
            )
        json_file = ann_dir / f"{split}.json"
        image_root = folder / "images"
        DatasetCatalog.register(
            name,
            partial(
                load_em_coco_json,
                json_file,
                image_root,
                name,
                classes=classes,
                evaluator_type=spec.evaluator_type,
                rotated=spec.rotated,
                mask_root=folder / "masks",
            ),
        )
        meta: dict[str, Any] = {
            "thing_classes": list(classes),
            "evaluator_type": spec.evaluator_type,
            "pixel_size": spec.pixel_size,
            "unit": spec.unit,
            "rotated": spec.rotated,
            "json_file": str(json_file),
            "image_root": str(image_root),
            "dataset_dir": str(folder),
        }
        if spec.stuff_classes:
            meta.update(
                stuff_classes=list(spec.stuff_classes),
                ignore_label=spec.ignore_label,
                sem_seg_root=str(folder / "masks"),
            )
        try:
            MetadataCatalog.get(name).set(**meta)
        except AssertionError as e:
            DatasetCatalog.remove(name)
            raise ValueError(
                f"{name!r}: its detectron2 metadata was set earlier to other values: {e}"
            ) from None
        done.append(split)
    _REGISTERED[spec.name] = (spec, folder, done)
    return [f"{spec.name}_{s}" for s in splits]


def register_datasets(
    specs: Iterable[DatasetSpec], root: str | os.PathLike[str] | None = None
) -> list[str]:
    """Register data sets with detectron2, lazily and idempotently.

    Parameters
    ----------
    specs : iterable of DatasetSpec
    root : path, optional
        Data sets root for specs with a relative ``dirname`` (default
        :func:`get_datasets_root`).

    Returns
    -------
    list of str
        The registered detectron2 names, ``<name>_<split>``, one per existing split json.

    Raises
    ------
    FileNotFoundError
        A data set folder has no ``annotations/<split>.json``.
    ValueError
        A name is already registered with a different spec (re-registering the same spec is
        fine and returns the same names).
    """
    names: list[str] = []
    for spec in specs:
        names += _register(spec, root)
    return names


def register_dataset(
    name: str,
    dirname: str | os.PathLike[str] | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
    classes: Sequence[str] = (),
    evaluator_type: str = "coco",
    pixel_size: float = 1.0,
    unit: str = "px",
    rotated: bool = False,
    stuff_classes: Sequence[str] = (),
    ignore_label: int = 255,
    splits: Sequence[str] | None = None,
) -> list[str]:
    """Register one data set; the arguments are those of :class:`DatasetSpec`.

    >>> register_dataset("my_rods", "/data/rods", classes=["nanorod"], rotated=True,
    ...                  pixel_size=0.4, unit="nm")
    ['my_rods_train', 'my_rods_val']
    """
    spec = DatasetSpec(
        name,
        os.fspath(dirname) if dirname is not None else None,
        tuple(classes),
        evaluator_type,
        pixel_size,
        unit,
        rotated,
        tuple(stuff_classes),
        ignore_label,
        tuple(splits) if splits is not None else None,
    )
    return _register(spec, root)


def unregister_dataset(name: str) -> None:
    """Remove a data set registered by emdet (all its splits) from detectron2's catalogs."""
    if name not in _REGISTERED:
        raise KeyError(f"data set {name!r} was not registered by emdet.data")
    spec, _, splits = _REGISTERED.pop(name)
    for split in splits:
        full = f"{spec.name}_{split}"
        if full in DatasetCatalog.list():
            DatasetCatalog.remove(full)
        MetadataCatalog.remove(full)


def _yaml_strings(path: Path, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(path, f"field '{key}' must be a list of names, got {value!r}")
    return tuple(value)


def read_dataset_yaml(path: str | os.PathLike[str], name: str | None = None) -> DatasetSpec:
    """Read a ``dataset.yaml`` into a :class:`DatasetSpec` for the folder it lies in.

    Known fields: ``classes``, ``evaluator_type``, ``pixel_size``, ``unit``, ``rotated``,
    ``stuff_classes``, ``ignore_label``, ``splits`` (a list, or a mapping whose keys are the
    splits). Other fields (``kind``, ``description``, ``synthetic``, ...) are provenance and
    ignored. ``name`` defaults to the folder name.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise _fail(path, f"not valid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _fail(
            path,
            f"expected a mapping of fields (classes, pixel_size, ...), got {type(data).__name__}",
        )
    kwargs: dict[str, Any] = {}
    if "classes" in data:
        kwargs["classes"] = _yaml_strings(path, "classes", data["classes"])
    if "stuff_classes" in data:
        kwargs["stuff_classes"] = _yaml_strings(path, "stuff_classes", data["stuff_classes"])
    if "evaluator_type" in data:
        if data["evaluator_type"] not in EVALUATOR_TYPES:
            raise _fail(
                path,
                f"field 'evaluator_type' must be one of {EVALUATOR_TYPES}, "
                f"got {data['evaluator_type']!r}",
            )
        kwargs["evaluator_type"] = data["evaluator_type"]
    if "pixel_size" in data:
        if not _is_number(data["pixel_size"]) or not data["pixel_size"] > 0:
            raise _fail(
                path, f"field 'pixel_size' must be a number > 0, got {data['pixel_size']!r}"
            )
        kwargs["pixel_size"] = data["pixel_size"]
    if "unit" in data:
        if not isinstance(data["unit"], str):
            raise _fail(path, f"field 'unit' must be a string such as nm, got {data['unit']!r}")
        kwargs["unit"] = data["unit"]
    for key, typ in (("rotated", bool), ("ignore_label", int)):
        if key in data:
            if not isinstance(data[key], typ) or (typ is int and isinstance(data[key], bool)):
                raise _fail(path, f"field '{key}' must be {typ.__name__}, got {data[key]!r}")
            kwargs[key] = data[key]
    if "splits" in data:
        splits = data["splits"]
        if isinstance(splits, Mapping):
            splits = list(splits)
        kwargs["splits"] = _yaml_strings(path, "splits", splits)
    try:
        return DatasetSpec(
            name=name or path.parent.name, dirname=str(path.parent.absolute()), **kwargs
        )
    except ValueError as e:
        raise _fail(path, str(e)) from None


def register_all_from_root(root: str | os.PathLike[str] | None = None) -> list[str]:
    """Register every ``<root>/<name>/annotations/*.json`` as ``<name>_<split>``.

    Each folder's ``dataset.yaml`` (written by :func:`emdet.data.synthetic.make_synthetic`)
    supplies classes, evaluator type, pixel size and unit; without one the classes come from
    the json's categories and the data set is a plain "coco" one with uncalibrated pixels.
    Safe to call repeatedly. A missing default root registers nothing; a missing explicit
    ``root`` is an error.

    Returns
    -------
    list of str
        All registered detectron2 names under the root.
    """
    base = get_datasets_root(root)
    if not base.is_dir():
        if root is not None:
            raise FileNotFoundError(f"data sets root {base} does not exist")
        logger.info("data sets root %s does not exist; nothing registered", base)
        return []
    names: list[str] = []
    for folder in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not any((folder / "annotations").glob("*.json")):
            continue
        yml = folder / DATASET_YAML
        if yml.is_file():
            spec = read_dataset_yaml(yml)
        else:
            spec = DatasetSpec(name=folder.name, dirname=str(folder.absolute()))
        names += _register(spec, None)
    return names
