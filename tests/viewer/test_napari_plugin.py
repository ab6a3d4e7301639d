"""The napari plugin as a user drives it: open a calibrated micrograph, run the shipped model,
filter by score, delete one object and paint one, save as COCO, read it back, measure.

Needs the ``napari`` extra and an X server (a virtual one, Xvfb, is started here when there is
no display): the viewer draws with OpenGL, which Qt's offscreen platform does not offer. Both
missing is a skip, unless ``EMDET_REQUIRE_NAPARI`` is set (CI sets it once it has installed
them), which makes it a failure.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs/real/mask_rcnn_cpu.yaml"
REQUIRED = bool(os.environ.get("EMDET_REQUIRE_NAPARI"))


def _need(module: str):
    if REQUIRED:
        return __import__(module)
    return pytest.importorskip(module, reason=f"{module} is not installed (pip install -e "
                               ".[napari]); EMDET_REQUIRE_NAPARI makes this a failure")


@pytest.fixture(scope="module")
def display():
    """An X display for Qt's xcb platform: the session's own, or a private Xvfb."""
    _need("napari")
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        if REQUIRED:
            pytest.fail("EMDET_REQUIRE_NAPARI is set but Xvfb is not installed")
        pytest.skip("no display and no Xvfb (apt-get install xvfb) for the napari viewer")
    number = 90 + os.getpid() % 900
    proc = subprocess.Popen([xvfb, f":{number}", "-screen", "0", "1280x1024x24", "-nolisten",
                             "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(50):
        if Path(f"/tmp/.X11-unix/X{number}").exists():
            break
        time.sleep(0.1)
    old = {k: os.environ.get(k) for k in ("DISPLAY", "QT_QPA_PLATFORM")}
    os.environ.update(DISPLAY=f":{number}", QT_QPA_PLATFORM="xcb")
    try:
        yield os.environ["DISPLAY"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def micrograph(tmp_path_factory):
    """A synthetic vesicle micrograph (16-bit, 0.8 nm pixels) and its 3-frame stack."""
    from emdet.data.io import write_tiff
    from emdet.data.synthetic import generate_image

    folder = tmp_path_factory.mktemp("micrographs")
    frames = [generate_image("vesicles", seed=3, index=k, size=256).image for k in range(3)]
    single = write_tiff(folder / "grid.tif", frames[0], pixel_size=0.8, unit="nm")
    stack = write_tiff(folder / "series.tif", np.stack(frames), pixel_size=0.8, unit="nm")
    return single, stack


def test_reader_gives_the_pixel_size_as_scale_and_unit(micrograph, tmp_path):
    _need("npe2")
    import npe2

    from emdet.napari.reader import get_reader

    single, stack = micrograph
    manifest = npe2.PluginManager.instance()
    manifest.discover()
    assert "emdet" in {m.name for m in manifest.iter_manifests()}  # the npe2 entry point
    [(data, kwargs, kind)] = get_reader(str(single))(str(single))
    assert kind == "image" and data.dtype == np.uint16 and data.shape == (256, 256)
    assert kwargs["scale"] == (0.8, 0.8) and kwargs["units"] == ("nm", "nm")
    assert kwargs["metadata"]["emdet"]["pixel_size"] == pytest.approx(0.8)
    [(data, kwargs, _)] = get_reader(str(stack))(str(stack))
    assert data.shape == (3, 256, 256) and kwargs["scale"] == (1.0, 0.8, 0.8)
    import cv2

    cv2.imwrite(str(tmp_path / "plain.png"), np.zeros((20, 30), np.uint8))
    [(_, kwargs, _)] = get_reader(str(tmp_path / "plain.png"))(str(tmp_path / "plain.png"))
    assert kwargs["scale"] == (1.0, 1.0) and kwargs["metadata"]["emdet"]["pixel_size"] is None
    assert get_reader(str(tmp_path / "notes.txt")) is None


def test_model_correct_save_retrain_measure_in_the_viewer(micrograph, display, tmp_path,
                                                          monkeypatch):
    napari = _need("napari")

    from emdet.data.datasets import load_em_coco_json
    from emdet.napari import core
    from emdet.napari.widgets import ModelWidget, StatsWidget

    single, _ = micrograph
    viewer = napari.Viewer(show=True)
    try:
        [image] = viewer.open(str(single), plugin="emdet")
        assert tuple(image.scale) == (0.8, 0.8) and str(image.units[0]) == "nanometer"
        widget = ModelWidget(viewer)
        widget.config.setText(str(CONFIG))
        widget.weights.setText("emdet://em-particles-r18")
        calls = []
        real_run = core.run_model
        monkeypatch.setattr(core, "run_model",
                            lambda *a, **k: calls.append(1) or real_run(*a, **k, opts=[
                                "MODEL.DEVICE", "cpu"]))
        widget.run_button.click()
        assert widget.status.text().endswith(f"(of {len(widget.result.scores)})"), \
            widget.status.text()
        labels = widget.result_layer
        assert labels.__class__.__name__ == "Labels" and tuple(labels.scale) == (0.8, 0.8)
        at_calibrated = len(np.unique(labels.data)) - 1
        assert at_calibrated >= 3 and widget.slider.value() == round(
            100 * widget.result.threshold)
        widget.slider.setValue(95)  # the slider filters without running the model again
        at_95 = len(np.unique(labels.data)) - 1
        widget.slider.setValue(5)
        at_05 = len(np.unique(labels.data)) - 1
        assert at_95 <= at_calibrated <= at_05 and at_95 < at_05 and len(calls) == 1
        widget.slider.setValue(round(100 * widget.result.threshold))

        # the layers are drawn: hiding the objects changes the picture
        shown = viewer.screenshot(canvas_only=True, flash=False)
        labels.visible = False
        hidden = viewer.screenshot(canvas_only=True, flash=False)
        labels.visible = True
        assert shown[..., :3].std() > 5 and np.abs(shown.astype(int) - hidden).sum() > 1000

        # correct: delete one object, paint a new one where there was none
        data = np.asarray(labels.data).copy()
        gone = int(np.unique(data[data > 0])[0])
        data[data == gone] = 0
        empty = next((y, x) for y in range(0, 240, 4) for x in range(0, 240, 4)
                     if not data[y:y + 12, x:x + 12].any())
        new_id = int(data.max()) + 1
        data[empty[0]:empty[0] + 12, empty[1]:empty[1] + 12] = new_id
        labels.data = data
        widget.root.setText(str(tmp_path / "datasets"))
        widget.name.setText("mine")
        widget.save_button.click()
        assert widget.status.text().startswith("saved to"), widget.status.text()

        # read back as training data: the objects as edited, the image at full depth, in nm
        ann = tmp_path / "datasets/mine/annotations/train.json"
        coco = json.loads(ann.read_text())
        assert coco["images"][0]["pixel_size"] == pytest.approx(0.8)
        assert (tmp_path / "datasets/mine/images/grid.tif").read_bytes() == single.read_bytes()
        records = load_em_coco_json(ann, tmp_path / "datasets/mine/images")
        from pycocotools import mask as mask_utils

        masks = [mask_utils.decode(o["segmentation"]) for o in records[0]["annotations"]]
        assert len(masks) == at_calibrated  # one deleted, one added
        assert any(m[empty[0]:empty[0] + 12, empty[1]:empty[1] + 12].all() and m.sum() == 144
                   for m in masks)
        saved_union = np.any(masks, axis=0)
        assert np.array_equal(saved_union, data > 0)

        # statistics of the layer, in nm
        stats = StatsWidget(viewer)
        viewer.layers.selection.active = labels
        stats.button.click()
        assert stats.table.rowCount() == at_calibrated
        assert "equivalent_diameter_nm" in stats.frame.columns
        assert stats.figure.axes[0].get_xlabel() == "equivalent diameter (nm)"
        square = stats.frame.set_index("label").loc[new_id]
        assert square["area_nm2"] == pytest.approx(144 * 0.64)
    finally:
        viewer.close()


def test_atom_finder_points_are_edited_and_saved(display, tmp_path):
    """The shipped heatmap U-Net (a dense config) gives a Points layer; a deleted and an added
    point are what the saved COCO holds, in the ``point`` field dense training reads."""
    napari = _need("napari")

    from emdet.data.io import write_tiff
    from emdet.data.synthetic import generate_image
    from emdet.napari.widgets import ModelWidget

    sample = generate_image("haadf", seed=11, index=0, size=192)
    path = write_tiff(tmp_path / "atoms.tif", sample.image, pixel_size=0.025, unit="nm")
    viewer = napari.Viewer(show=True)
    try:
        viewer.open(str(path), plugin="emdet")
        widget = ModelWidget(viewer)
        widget.config.setText(str(REPO / "configs/real/points_heatmap_cpu.yaml"))
        widget.run()
        points = widget.result_layer
        assert points.__class__.__name__ == "Points"
        truth = len(sample.instances)
        assert abs(len(points.data) - truth) <= 0.15 * truth  # F1 ~0.97 on these
        kept = np.asarray(points.data)[1:]  # delete the first, add one at (10, 20)
        points.data = np.vstack([kept, [[10.0, 20.0]]])
        widget.root.setText(str(tmp_path / "datasets"))
        widget.name.setText("atoms")
        widget.save()
        coco = json.loads((tmp_path / "datasets/atoms/annotations/train.json").read_text())
        saved = np.array([a["point"] for a in coco["annotations"]])
        assert len(saved) == len(kept) + 1 and saved[-1].tolist() == [20.0, 10.0]  # x, y
        assert coco["categories"] == [{"id": 1, "name": "atom"}]
    finally:
        viewer.close()


def test_rotated_boxes_are_saved_as_rbox():
    from emdet.napari.core import layers_to_coco

    coco = layers_to_coco({"path": "/x/rods.tif", "pixel_size": 0.5, "unit": "nm"}, (64, 80),
                          ["rod"], rboxes=np.array([[30.0, 20.0, 24.0, 6.0, 30.0]]))
    [ann] = coco["annotations"]
    assert ann["rbox"] == pytest.approx([30.0, 20.0, 24.0, 6.0, 30.0])
    assert ann["area"] == pytest.approx(144.0) and coco["images"][0]["pixel_size"] == 0.5


def test_a_folder_is_run_and_the_saved_set_retrains(display, micrograph, tmp_path):
    """Run on a folder, pick one image's result, save it, and train on the saved data set with
    tools/train_net.py (a few iterations from the shipped weights)."""
    import sys

    napari = _need("napari")

    from emdet.data.io import write_tiff
    from emdet.data.synthetic import generate_image
    from emdet.napari.widgets import ModelWidget

    folder = tmp_path / "folder"
    folder.mkdir()
    for k in range(2):
        write_tiff(folder / f"img{k}.tif", generate_image("vesicles", seed=5, index=k,
                                                          size=192).image, pixel_size=1.5)
    viewer = napari.Viewer(show=True)
    try:
        widget = ModelWidget(viewer)
        widget.config.setText(str(CONFIG))
        widget.folder.setText(str(folder))
        widget.run_folder()
        names = [layer.name for layer in viewer.layers]
        assert names == ["img0", "img0 instances", "img1", "img1 instances"]
        first = viewer.layers["img0 instances"]
        viewer.layers.selection.active = first  # the slider and Save now act on img0
        assert widget.result_layer is first and widget.image_meta["path"].endswith("img0.tif")
        widget.slider.setValue(30)
        assert first.metadata["emdet_threshold"] == 30
        assert viewer.layers["img1 instances"].metadata["emdet_threshold"] != 30
        widget.root.setText(str(tmp_path / "datasets"))
        widget.name.setText("mine")
        widget.save()
    finally:
        viewer.close()
    coco = json.loads((tmp_path / "datasets/mine/annotations/train.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["img0.tif"] and coco["annotations"]
    out = tmp_path / "retrained"
    result = subprocess.run(
        [sys.executable, str(REPO / "tools/train_net.py"), "--config-file", str(CONFIG),
         "DATASETS.TRAIN", "('mine_train',)", "DATASETS.TEST", "()", "TEST.EVAL_PERIOD", "0",
         "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()",
         "EMDET.DATASETS_ROOT", str(tmp_path / "datasets"), "OUTPUT_DIR", str(out),
         "MODEL.DEVICE", "cpu"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "model_final.pth").is_file()


def test_a_frame_of_a_stack_is_saved_as_its_own_calibrated_tiff(micrograph, tmp_path):
    from emdet.data.io import read_image
    from emdet.napari.core import layers_to_coco, save_dataset

    _, stack = micrograph
    labels = np.zeros((256, 256), np.int32)
    labels[10:20, 30:45] = 1
    coco = layers_to_coco({"path": str(stack), "pixel_size": 0.8, "unit": "nm"}, (256, 256),
                          ["vesicle"], labels=labels)
    ann = save_dataset(coco, stack, tmp_path / "datasets", "frames", frame=1)
    saved = json.loads(ann.read_text())
    assert [im["file_name"] for im in saved["images"]] == ["series_f0001.tif"]
    pixels, meta = read_image(tmp_path / "datasets/frames/images/series_f0001.tif")
    assert np.array_equal(pixels, read_image(stack, page=1)[0])
    assert meta.pixel_size == pytest.approx(0.8) and saved["annotations"][0]["area"] == 150


def test_a_segmentation_is_saved_as_a_class_mask_that_train_unet_reads(tmp_path):
    """Bragg (or U-Net) classes go to masks/<stem>.png with sem_seg_file_name, the dense layout,
    and load back as training samples with exactly those labels."""
    import cv2

    from emdet.data.io import write_tiff
    from emdet.data.synthetic import generate_image
    from emdet.dense.config import load_unet_config
    from emdet.dense.data import load_dense_samples
    from emdet.napari.core import layers_to_coco, run_model, save_dataset

    sample = generate_image("graphene", seed=2, index=0, size=128)
    path = write_tiff(tmp_path / "sheet.tif", sample.image, pixel_size=0.025)
    result = run_model(sample.image, "", method="bragg")
    labels = result.labels_at(0.5)
    assert result.kind == "classes" and set(np.unique(labels)) <= {0, 1}
    coco = layers_to_coco({"path": str(path), "pixel_size": 0.025, "unit": "nm"},
                          labels.shape, result.class_names)
    save_dataset(coco, path, tmp_path / "datasets", "sheets", class_mask=labels)
    saved = cv2.imread(str(tmp_path / "datasets/sheets/masks/sheet.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(saved, labels)
    cfg = load_unet_config(REPO / "configs/unet/graphene_contamination.yaml",
                           ["DATASET.DIR", str(tmp_path / "datasets/sheets"),
                            "DATASET.CLASSES", "['lattice', 'contamination']"])
    [loaded], classes = load_dense_samples(cfg)
    assert classes == ("lattice", "contamination") and np.array_equal(loaded.labels, labels)
