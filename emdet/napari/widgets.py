"""The napari widgets: run a model, correct, save as COCO; measure a Labels layer.

Each widget is a plain Qt widget that takes the viewer (npe2 passes ``napari_viewer``); the
work is done by :mod:`emdet.napari.core`.
"""
from __future__ import annotations

import logging

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from emdet.napari import core

logger = logging.getLogger(__name__)

__all__ = ["ModelWidget", "StatsWidget"]

_METHODS = {"emdet model (config file)": "auto", "Bragg filter": "bragg"}


def _image_layer(viewer):
    """The selected image layer, else the only or first one; a ValueError if there is none."""
    from napari.layers import Image

    active = viewer.layers.selection.active
    if isinstance(active, Image):
        return active
    images = [layer for layer in viewer.layers if isinstance(layer, Image)]
    if not images:
        raise ValueError("open an image first (File > Open: TIFF, DM3/DM4, MRC, SER, EMD...)")
    return images[0]


def _layer_meta(layer) -> dict:
    meta = dict(layer.metadata.get("emdet") or {})
    if not meta.get("path") and getattr(layer, "source", None) and layer.source.path:
        meta["path"] = str(layer.source.path)
    return meta


class ModelWidget(QWidget):
    """Run a trained model on the selected image, filter by score, save the corrected objects."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.result: core.ModelResult | None = None
        self.result_layer = None
        self.image_meta: dict = {}
        self._runs: dict[int, tuple] = {}  # id(result layer) -> (layer, result, image meta)
        form = QFormLayout()
        self.method = QComboBox()
        self.method.addItems(list(_METHODS))
        self.config = QLineEdit()
        self.config.setPlaceholderText("configs/real/mask_rcnn_cpu.yaml")
        self.weights = QLineEdit()
        self.weights.setPlaceholderText("model_best.pth or emdet://... (default: the config's)")
        self.bragg = QLineEdit()
        self.bragg.setPlaceholderText("bragg_params.json (Bragg filter only)")
        self.run_button = QPushButton("Run on the selected image")
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("a folder of images")
        self.folder_button = QPushButton("Run on every image of the folder")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, 100)
        self.score_label = QLabel("score >= -")
        self.root = QLineEdit("datasets")
        self.name = QLineEdit()
        self.name.setPlaceholderText("my_particles")
        self.split = QLineEdit("train")
        self.save_button = QPushButton("Save as COCO for retraining")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        for label, widget in (("method", self.method), ("config", self.config),
                              ("weights", self.weights), ("Bragg parameters", self.bragg),
                              ("", self.run_button), ("folder", self.folder),
                              ("", self.folder_button), (self.score_label, self.slider),
                              ("datasets folder", self.root), ("data set name", self.name),
                              ("split", self.split), ("", self.save_button)):
            form.addRow(label, widget)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.run_button.clicked.connect(self._guarded(self.run))
        self.folder_button.clicked.connect(self._guarded(self.run_folder))
        self.viewer.layers.selection.events.active.connect(self._guarded(self._select))
        self.save_button.clicked.connect(self._guarded(self.save))
        self.slider.valueChanged.connect(self._guarded(self.show_threshold))

    def _guarded(self, fn):
        def call(*_):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - a GUI reports, it does not crash
                logger.exception("emdet widget")
                self.status.setText(f"error: {e}")
        return call

    # -- run ------------------------------------------------------------------------------
    def run(self) -> None:
        """The model on the selected image (the shown frame of a stack)."""
        self._run_on(_image_layer(self.viewer))

    def run_folder(self, limit: int = 200) -> None:
        """Every image of the folder opened and run; the slider and Save then act on the
        selected result layer (each image keeps its own). At most ``limit`` images."""
        from emdet.data.io import list_images

        folder = self.folder.text().strip()
        if not folder:
            raise ValueError("give the folder")
        paths = list_images([folder])
        if not paths:
            raise ValueError(f"{folder}: no images emdet reads")
        if len(paths) > limit:
            raise ValueError(f"{folder}: {len(paths)} images; the viewer takes up to {limit} "
                             "(use tools/predict.py for batches)")
        for path in paths:
            [(data, kwargs, _)] = core.read_layers(path)
            self._run_on(self.viewer.add_image(data, **kwargs), replace=False)
        self.status.setText(f"{len(paths)} images from {folder}: select a result layer to "
                            "filter, correct and save it")

    def _select(self, *_) -> None:
        """Selecting a result layer makes it the one the slider and Save act on."""
        run = self._runs.get(id(self.viewer.layers.selection.active))
        if run is None or run[0] is self.result_layer:
            return
        self.result_layer, self.result, self.image_meta = run
        self.slider.blockSignals(True)
        self.slider.setValue(run[0].metadata.get("emdet_threshold", 50))
        self.slider.blockSignals(False)

    def _run_on(self, layer, replace: bool = True) -> None:
        self.image_meta = _layer_meta(layer)
        data = np.asarray(layer.data)
        frame = int(self.viewer.dims.current_step[0]) if data.ndim == 3 else None
        image = data[frame] if frame is not None else data
        method = _METHODS[self.method.currentText()]
        if method != "bragg" and not self.config.text().strip():
            raise ValueError("give the model's config file")
        self.status.setText("running the model...")
        self.result = core.run_model(
            image, self.config.text().strip(), self.weights.text().strip() or None,
            pixel_size=self.image_meta.get("pixel_size"), method=method,
            bragg_params=self.bragg.text().strip() or None)
        self.image_meta["frame"] = frame
        self._add_result_layer(layer, replace)
        self.slider.blockSignals(True)
        self.slider.setValue(round(100 * self.result.threshold))
        self.slider.blockSignals(False)
        self.show_threshold()

    def _add_result_layer(self, image_layer, replace: bool) -> None:
        if replace and self.result_layer is not None and self.result_layer in self.viewer.layers:
            stale = self.result_layer
            if stale.metadata.get("emdet_image", {}).get("path") == self.image_meta.get("path"):
                self._runs.pop(id(stale), None)
                self.viewer.layers.remove(stale)  # a new run on the same image replaces it
        r = self.result
        kw = {"name": f"{image_layer.name} {r.kind}", "scale": image_layer.scale[-2:],
              "units": tuple(image_layer.units[-2:]),
              "metadata": {"emdet_image": self.image_meta, "emdet_classes": r.class_names}}
        if r.kind in ("instances", "classes"):
            self.result_layer = self.viewer.add_labels(np.zeros(r.shape, np.int32), **kw)
        elif r.kind == "points":
            self.result_layer = self.viewer.add_points(
                np.zeros((0, 2)), size=6, face_color="transparent", border_color="yellow",
                **kw)
        else:
            self.result_layer = self.viewer.add_shapes(
                [], shape_type="polygon", edge_color="yellow", face_color="transparent",
                edge_width=2, **kw)
        self._runs[id(self.result_layer)] = (self.result_layer, r, self.image_meta)

    def show_threshold(self) -> None:
        """Show the objects scoring at least the slider's value (no new model run)."""
        r, layer = self.result, self.result_layer
        if r is None or layer is None:
            return
        t = self.slider.value() / 100
        layer.metadata["emdet_threshold"] = self.slider.value()
        self.score_label.setText(f"score >= {t:.2f}")
        if r.kind == "classes":
            layer.data = r.labels_at(t)
            n = len(r.class_names)
        elif r.kind == "instances":
            layer.data = r.labels_at(t)
            keep = r.keep(t)
            layer.metadata["label_classes"] = {int(k) + 1: int(r.classes[k]) for k in keep}
            n = len(keep)
        elif r.kind == "points":
            keep = r.keep(t)
            layer.data = r.points_at(t)
            layer.features = {"class": r.classes[keep], "score": r.scores[keep]}
            n = len(keep)
        else:
            keep = r.keep(t)
            layer.data = r.shapes_at(t) if len(keep) else []
            if len(keep):
                layer.shape_type = ["polygon"] * len(keep)
            layer.features = {"class": r.classes[keep], "score": r.scores[keep]}
            n = len(keep)
        if r.kind != "classes":
            self.status.setText(f"{n} objects at score >= {t:.2f} (of {len(r.scores)})")

    # -- save -----------------------------------------------------------------------------
    def coco(self) -> dict:
        """The result layer as it is now (after edits) as COCO."""
        layer, r = self.result_layer, self.result
        if layer is None or r is None:
            raise ValueError("run a model first (or open a result layer)")
        kwargs: dict = {}
        if r.kind == "classes":  # a segmentation: saved as a class mask, not as objects
            return core.layers_to_coco(self.image_meta, r.shape, r.class_names)
        if r.kind == "instances":
            kwargs["labels"] = np.asarray(layer.data)
            kwargs["label_classes"] = layer.metadata.get("label_classes", {})
        elif r.kind == "points":
            kwargs["points"] = np.asarray(layer.data)
            feats = layer.features
            kwargs["point_classes"] = [int(c) if c == c else 0 for c in feats.get(
                "class", [0] * len(layer.data))]
        else:
            from emdet.data.geometry import polygon_to_rbox

            kwargs["rboxes"] = np.array([polygon_to_rbox(np.asarray(s)[:, ::-1].ravel())
                                         for s in layer.data]).reshape(-1, 5)
            kwargs["rbox_classes"] = [int(c) if c == c else 0 for c in layer.features.get(
                "class", [0] * len(layer.data))]
        return core.layers_to_coco(self.image_meta, r.shape, r.class_names, **kwargs)

    def save(self) -> None:
        if not self.image_meta.get("path"):
            raise ValueError("the image has no file to copy into the data set (open it from disk)")
        mask = (np.asarray(self.result_layer.data) if self.result is not None
                and self.result.kind == "classes" else None)
        out = core.save_dataset(self.coco(), self.image_meta["path"], self.root.text().strip(),
                                self.name.text().strip(), self.split.text().strip() or "train",
                                frame=self.image_meta.get("frame"), class_mask=mask)
        self.status.setText(f"saved to {out}")


class StatsWidget(QWidget):
    """The emdet.stats table of the selected Labels layer and its size histogram."""

    def __init__(self, napari_viewer):
        super().__init__()
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.viewer = napari_viewer
        self.table = QTableWidget()
        self.figure = Figure(figsize=(4, 3), dpi=100)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.button = QPushButton("Measure the selected Labels layer")
        self.status = QLabel("")
        layout = QVBoxLayout(self)
        for w in (self.button, self.status, self.canvas, self.table):
            layout.addWidget(w)
        self.button.clicked.connect(self.measure)
        self.frame = None

    def measure(self) -> None:
        from napari.layers import Labels

        from emdet.stats.report import histogram_bins

        layer = self.viewer.layers.selection.active
        if not isinstance(layer, Labels):
            labels = [lay for lay in self.viewer.layers if isinstance(lay, Labels)]
            if not labels:
                self.status.setText("no Labels layer to measure")
                return
            layer = labels[-1]
        meta = layer.metadata.get("emdet_image") or {}
        if not meta:
            try:
                meta = _layer_meta(_image_layer(self.viewer))
            except ValueError:
                meta = {}
        self.frame = core.measure_layer(np.asarray(layer.data), meta)
        unit = "nm" if meta.get("pixel_size") else "px"
        column = f"equivalent_diameter_{unit}"
        shown = ["label", "area_px", column, "circularity"]
        shown = [c for c in shown if c in self.frame.columns]
        self.table.setColumnCount(len(shown))
        self.table.setHorizontalHeaderLabels(shown)
        self.table.setRowCount(len(self.frame))
        for i, row in enumerate(self.frame[shown].itertuples(index=False)):
            for j, v in enumerate(row):
                self.table.setItem(i, j, QTableWidgetItem(f"{v:.4g}" if isinstance(v, float)
                                                          else str(v)))
        self.figure.clear()
        ax = self.figure.add_subplot(111)
        values = self.frame[column].dropna().to_numpy()
        if len(values):
            ax.hist(values, bins=histogram_bins(values), color="#4477aa", edgecolor="white")
        ax.set_xlabel(f"equivalent diameter ({unit})")
        ax.set_ylabel("count")
        self.figure.tight_layout()
        self.canvas.draw()
        self.status.setText(f"{len(self.frame)} objects in {layer.name}"
                            + ("" if unit == "nm" else " (sizes in pixels: no calibration)"))
