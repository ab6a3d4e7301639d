"""napari plugin (``pip install -e .[napari]``): open EM files with their scale, run an emdet
model, correct the objects with napari's own tools, save them as COCO for retraining, and
measure them. The manifest is ``napari.yaml``; the logic is in :mod:`.core` (no Qt needed),
the widgets in :mod:`.widgets`."""
