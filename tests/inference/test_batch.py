"""predict_batch: a folder of mixed files -> COCO, failures, overlays; resumes; shares work."""

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from emdet.data.io import write_tiff
from emdet.inference.batch import PredictOptions, predict_batch
from emdet.inference.predictor import EMPredictor, PredictError

CLASSES = ["dim", "bright"]


@pytest.fixture
def folder(tmp_path, h):
    """scene.tif (300x420, 0.5 nm, tiled), stack.tif (3 frames, 2 nm), small.png
    (uncalibrated) and broken.tif (corrupt)."""
    d = tmp_path / "images"
    d.mkdir()
    write_tiff(d / "scene.tif", h.blob_scene(300, 420, 40, 0), pixel_size=0.5, unit="nm")
    stack = np.stack([h.blob_scene(128, 128, 6, 10 + k) for k in range(3)])
    write_tiff(d / "stack.tif", stack, pixel_size=2.0, unit="nm")
    small = (h.blob_scene(100, 120, 5, 20) // 8).astype(np.uint8)
    cv2.imwrite(str(d / "small.png"), small)
    (d / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 40)
    (d / "notes.txt").write_text("not an image")
    return d


def _predictor(h, model=None, tile=128, overlap=32):
    return EMPredictor(h.oracle_cfg(), model=model or h.OracleModel(), tile=tile,
                       overlap=overlap)


def _run(h, folder, out, predictor=None, **options):
    opts = PredictOptions(tile=options.pop("tile", 128), overlap=options.pop("overlap", 32),
                          class_names=CLASSES, progress=False, **options)
    return predict_batch(folder, out, h.oracle_cfg(), opts,
                         predictor=predictor or _predictor(h, tile=opts.tile,
                                                           overlap=opts.overlap))


def _failures(out: Path) -> list[dict]:
    with open(out / "failures.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_folder_to_coco_failures_and_overlays(h, folder, tmp_path):
    from pycocotools.coco import COCO

    out = tmp_path / "out"
    result = _run(h, folder, out)
    assert result.frames_predicted == 5 and len(result.failed) == 1
    coco = COCO(str(out / "predictions.json"))
    images = {(im["file_name"], im["frame"]): im for im in coco.dataset["images"]}
    assert sorted(images) == [("scene.tif", 0), ("small.png", 0), ("stack.tif", 0),
                              ("stack.tif", 1), ("stack.tif", 2)]
    scene = images[("scene.tif", 0)]
    assert (scene["width"], scene["height"], scene["pixel_size"], scene["unit"]) == (
        420, 300, pytest.approx(0.5), "nm")
    assert images[("stack.tif", 2)]["n_frames"] == 3
    assert images[("small.png", 0)]["pixel_size"] is None
    assert [c["name"] for c in coco.dataset["categories"]] == CLASSES
    assert coco.dataset["info"]["settings"]["tile"] == 128

    # The tiled scene's masks are exactly the objects of the whole image.
    from emdet.inference.coco import annotations_to_detections

    anns = coco.loadAnns(coco.getAnnIds(imgIds=[scene["id"]]))
    det = annotations_to_detections(anns, 300, 420, {1: 0, 2: 1})
    image = h.blob_scene(300, 420, 40, 0)
    assert h.mask_set(det) == h.components(image)
    for ann in anns[:5]:
        assert 0 < ann["score"] <= 1 and ann["iscrowd"] == 0
        assert coco.annToMask(ann).sum() == ann["area"]
    ids = [a["id"] for a in coco.dataset["annotations"]]
    assert ids == list(range(1, len(ids) + 1))

    rows = _failures(out)
    assert len(rows) == 1 and rows[0]["file"] == "broken.tif"
    assert rows[0]["error"] == "read: ImageReadError" and "broken.tif" in rows[0]["reason"]
    for im in coco.dataset["images"]:
        assert (out / im["overlay"]).is_file()
    assert sorted(p.name for p in (out / "overlays").iterdir()) == [
        "scene.png", "small.png", "stack_f0000.png", "stack_f0001.png", "stack_f0002.png"]


def test_rerun_skips_finished_files_and_redoes_missing_ones(h, folder, tmp_path):
    out = tmp_path / "out"
    _run(h, folder, out)
    first = json.loads((out / "predictions.json").read_text())

    model = h.OracleModel()
    result = _run(h, folder, out, predictor=_predictor(h, model))
    assert model.calls == 0 and result.files_skipped == 3 and result.frames_predicted == 0
    again = json.loads((out / "predictions.json").read_text())
    assert again["images"] == first["images"] and again["annotations"] == first["annotations"]
    assert len(_failures(out)) == 1  # the broken file is retried and fails again

    (out / "parts" / "files" / "scene.part.json").unlink()
    model = h.OracleModel()
    result = _run(h, folder, out, predictor=_predictor(h, model))
    assert result.frames_predicted == 1 and model.tiles == 15  # scene.tif's 3 x 5 tiles only
    assert json.loads((out / "predictions.json").read_text())["annotations"] == \
        first["annotations"]


def test_a_failing_frame_is_listed_and_retried_alone(h, folder, tmp_path):
    out = tmp_path / "out"
    # Calls in file order (batch 1): scene 15 tiles, small 1, stack frame 0, frame 1 ...
    assert len(_predictor(h).tiles(300, 420)) == 15
    model = h.OracleModel(fail_on_call=15 + 1 + 2)
    result = _run(h, folder, out, predictor=_predictor(h, model))
    assert result.frames_predicted == 4
    rows = _failures(out)
    assert [(r["file"], r["frame"], r["error"]) for r in rows] == [
        ("broken.tif", "", "read: ImageReadError"),
        ("stack.tif", "1", "predict: RuntimeError"),
    ]
    frames = [im["frame"] for im in json.loads((out / "predictions.json").read_text())["images"]
              if im["file_name"] == "stack.tif"]
    assert frames == [0, 2]

    model = h.OracleModel()
    result = _run(h, folder, out, predictor=_predictor(h, model))
    assert result.frames_predicted == 1 and model.calls == 1
    assert [r["file"] for r in _failures(out)] == ["broken.tif"]
    frames = [im["frame"] for im in json.loads((out / "predictions.json").read_text())["images"]
              if im["file_name"] == "stack.tif"]
    assert frames == [0, 1, 2]
    assert not (out / "parts" / "files" / "stack.frames").exists()


def test_other_settings_are_refused_unless_overwrite(h, folder, tmp_path):
    out = tmp_path / "out"
    _run(h, folder, out)
    with pytest.raises(PredictError, match=r"other settings \(.*tile: 128 -> 96"):
        _run(h, folder, out, tile=96)
    result = _run(h, folder, out, tile=96, overwrite=True)
    assert result.frames_predicted == 5


def test_ranks_share_the_files_and_rank_zero_assembles(h, folder, tmp_path):
    out = tmp_path / "out"
    opts = PredictOptions(tile=128, overlap=32, class_names=CLASSES, progress=False)
    models = {r: h.OracleModel() for r in (0, 1)}
    r1 = predict_batch(folder, out, h.oracle_cfg(), opts, predictor=_predictor(h, models[1]),
                       rank=1, world_size=2)
    assert r1.predictions is None and r1.files == 2  # files 1 and 3 of broken, scene, small, stack
    r0 = predict_batch(folder, out, h.oracle_cfg(), opts, predictor=_predictor(h, models[0]),
                       rank=0, world_size=2)
    assert r0.files == 2 and r0.predictions.is_file()
    assert models[0].tiles == 1 and models[1].tiles == 15 + 3  # small | scene + stack
    images = json.loads(r0.predictions.read_text())["images"]
    assert len(images) == 5


def test_labelme_files_point_at_the_full_depth_image_and_convert_back_calibrated(
        h, folder, tmp_path):
    import base64

    from emdet.data.converters import convert_annotations
    from emdet.data.io import read_image

    out = tmp_path / "out"
    _run(h, folder, out, labelme=True, overlays=False)
    doc = json.loads((out / "labelme" / "scene.json").read_text())
    # imagePath: the 16-bit, 0.5 nm input itself; imageData: the 8-bit view labelme shows
    assert (out / "labelme" / doc["imagePath"]).resolve() == (folder / "scene.tif").resolve()
    view = cv2.imdecode(np.frombuffer(base64.b64decode(doc["imageData"]), np.uint8),
                        cv2.IMREAD_UNCHANGED)
    assert view.dtype == np.uint8 and view.shape == (300, 420) and view.max() > 100
    assert (doc["imageHeight"], doc["imageWidth"]) == (300, 420)
    n_objects = len(h.components(h.blob_scene(300, 420, 40, 0)))
    assert len(doc["shapes"]) >= n_objects
    assert {s["label"] for s in doc["shapes"]} <= set(CLASSES)
    # a frame of the stack: labelme has no frames, so the frame alone, lossless and calibrated
    frame = json.loads((out / "labelme" / "stack_f0002.json").read_text())
    assert frame["imagePath"] == "stack_f0002.tif"
    pixels, meta = read_image(out / "labelme" / "stack_f0002.tif")
    original, _ = read_image(folder / "stack.tif", page=2)
    assert pixels.dtype == original.dtype and np.array_equal(pixels, original)
    assert (meta.pixel_size, meta.unit) == (pytest.approx(2.0), "nm")
    assert not (out / "overlays").exists()
    # corrected in labelme and converted back: the original pixels and pixel size, not a PNG
    coco_path = tmp_path / "corrected.json"
    convert_annotations(out / "labelme", coco_path, "labelme", classes=CLASSES, progress=False)
    images = {Path(im["file_name"]).name: im for im in json.loads(coco_path.read_text())["images"]}
    assert images["scene.tif"]["pixel_size"] == pytest.approx(0.5)
    assert images["stack_f0002.tif"]["pixel_size"] == pytest.approx(2.0)
    assert "small.png" in images and images["small.png"].get("pixel_size") is None
    # resuming with overlays draws the missing ones without predicting again
    model = h.OracleModel()
    _run(h, folder, out, predictor=_predictor(h, model), labelme=True)
    assert model.calls == 0 and (out / "overlays" / "stack_f0001.png").is_file()


def test_a_broken_setup_stops_the_batch(h, folder, tmp_path):
    with pytest.raises(RuntimeError, match="simulated model failure"):
        _run(h, folder, tmp_path / "out", predictor=_predictor(h, h.OracleModel(fail_on_call=1)))


def test_inputs_that_name_no_images_are_explained(h, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PredictError, match="no images found"):
        _run(h, empty, tmp_path / "out")
    with pytest.raises(PredictError, match="cannot list the input images"):
        _run(h, tmp_path / "missing", tmp_path / "out")


def test_input_names_cannot_overwrite_the_runs_own_files(h, tmp_path):
    """run.tif once wrote parts/run.json, predict's settings, and the rerun refused; x.failed.tif
    and x_f0001.tif collided with x.tif's failure record and x's frame names."""
    d = tmp_path / "images"
    d.mkdir()
    for k, stem in enumerate(("run", "x", "x.failed", "x_f0001", "predictions")):
        write_tiff(d / f"{stem}.tif", h.blob_scene(100, 120, 4, 30 + k), pixel_size=1.0, unit="nm")
    stack = np.stack([h.blob_scene(100, 120, 4, 40 + k) for k in range(2)])
    write_tiff(d / "s.tif", stack, pixel_size=1.0, unit="nm")
    out = tmp_path / "out"
    first = _run(h, d, out)
    assert first.frames_predicted == 7 and not first.failed
    coco = json.loads((out / "predictions.json").read_text())
    assert sorted({im["file_name"] for im in coco["images"]}) == [
        "predictions.tif", "run.tif", "s.tif", "x.failed.tif", "x.tif", "x_f0001.tif"]
    overlays = sorted(p.name for p in (out / "overlays").iterdir())
    assert len(overlays) == 7, overlays  # one per frame, none overwritten by another

    model = h.OracleModel()
    again = _run(h, d, out, predictor=_predictor(h, model))  # resumes, no --overwrite needed
    assert again.files_skipped == 6 and again.frames_predicted == 0 and model.calls == 0
    assert json.loads((out / "predictions.json").read_text()) == {
        **coco, "info": json.loads((out / "predictions.json").read_text())["info"]}


def test_output_that_is_a_file_is_a_clear_error(h, folder, tmp_path):
    target = tmp_path / "out.json"
    target.write_text("{}")
    with pytest.raises(PredictError, match="out.json is a file, not a folder"):
        _run(h, folder, target)
    assert target.read_text() == "{}"


def test_a_size_in_nm_is_the_same_from_annotations_and_from_predictions(h, tmp_path):
    """Calibration carried labelme -> COCO and predict -> predictions.json, both -> stats: the
    same objects get the same pixel size, so the same diameters in nm."""
    import pandas as pd

    from emdet.data.converters import convert_annotations
    from emdet.stats.pipeline import run_stats_report

    images = tmp_path / "images"
    images.mkdir()
    write_tiff(images / "grid.tif", h.blob_scene(200, 260, 12, 3), pixel_size=0.8, unit="nm")
    out = tmp_path / "out"
    _run(h, images, out, labelme=True, overlays=False)  # the oracle finds every blob
    # the annotation path: the labelme files (as a user corrects them), converted to COCO
    coco = tmp_path / "annotated.json"
    convert_annotations(out / "labelme", coco, "labelme", classes=CLASSES, progress=False)
    image = json.loads(coco.read_text())["images"][0]
    assert (image["pixel_size"], image["unit"]) == (pytest.approx(0.8), "nm")
    tables = {}
    for name, source in (("annotated", coco), ("predicted", out / "predictions.json")):
        result = run_stats_report(source, tmp_path / f"stats_{name}", max_overlays=0)
        assert not any("pixels" in note for note in result.notes), result.notes
        tables[name] = pd.read_csv(result.instances_csv).sort_values("centroid_x_px")
    a, p = tables["annotated"], tables["predicted"]
    assert len(a) == len(p) == len(h.components(h.blob_scene(200, 260, 12, 3)))
    for t in (a, p):  # nm from the image's own 0.8 nm pixels on both paths
        assert (t["pixel_size"] == 0.8).all() and (t["unit"] == "nm").all()
        np.testing.assert_allclose(t["area_nm2"], 0.64 * t["area_px"], rtol=1e-9)
        np.testing.assert_allclose(t["equivalent_diameter_nm"],
                                   0.8 * np.sqrt(4 * t["area_px"] / np.pi), rtol=1e-9)
    # polygons (labelme, along pixel edges) and RLE masks (predict) of the same blobs: the
    # same pixels, so the same diameters (through pixel centres they came out 1 px smaller)
    np.testing.assert_allclose(a["equivalent_diameter_nm"].to_numpy(),
                               p["equivalent_diameter_nm"].to_numpy(), rtol=1e-9)
    np.testing.assert_array_equal(a["area_px"].to_numpy(), p["area_px"].to_numpy())
