"""emdet makes detectron2 complete: ops stand-in, install-time patches, clear errors."""
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import emdet
from emdet.compat import install_detectron2 as inst


def test_import_emdet_makes_detectron2_importable():
    code = "import emdet, detectron2.modeling, detectron2.evaluation, detectron2.layers; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.skipif(emdet.has_compiled_ops(), reason="official detectron2 with compiled ops")
def test_detectron2_imports_in_any_order():
    code = (
        "import detectron2.modeling, torch; from detectron2 import _C; "
        "assert _C.EMDET_PURE_PYTORCH and hasattr(torch.ops.detectron2, 'nms_rotated'); "
        "import emdet; print(emdet.detectron2_status())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "ops: emdet.ops (PyTorch)" in out.stdout


def test_status_names_ops_in_use():
    status = emdet.detectron2_status()
    assert status.startswith("detectron2 0.6") or "detectron2" in status
    assert ("emdet.ops" in status) != emdet.has_compiled_ops()


@pytest.mark.skipif(emdet.has_compiled_ops(), reason="official detectron2 with compiled ops")
def test_stand_in_module_and_torch_op_registered():
    import torch
    from detectron2 import _C

    assert _C.EMDET_PURE_PYTORCH
    assert hasattr(torch.ops.detectron2, "nms_rotated")


@pytest.mark.skipif(emdet.has_compiled_ops(), reason="official detectron2 with compiled ops")
def test_installed_detectron2_is_patched_for_todays_stack():
    import detectron2
    import detectron2.data.transforms.transform as T

    root = Path(detectron2.__file__).parent
    assert (root / inst.MARKER).read_text().strip() == inst.PATCH_VERSION
    # Pillow >= 10 has no Image.LINEAR: the default must be BILINEAR.
    from PIL import Image

    assert T.ExtentTransform.__init__.__defaults__[0] == Image.BILINEAR
    for path in root.glob("**/*.py"):
        assert not inst.NUMPY_ALIAS_RE.search(path.read_text()), path
    assert "pkg_resources" not in (root / "model_zoo/model_zoo.py").read_text()
    from detectron2 import model_zoo

    assert Path(model_zoo.get_config_file("Base-RCNN-FPN.yaml")).is_file()


@pytest.mark.skipif(emdet.has_compiled_ops(), reason="official detectron2 with compiled ops")
def test_coco_evaluator_falls_back_to_official_cocoeval(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.evaluation import COCOEvaluator

    name = "emdet_test_compat_empty"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [])
        MetadataCatalog.get(name).set(thing_classes=["a"], json_file=str(tmp_path / "x.json"))
    (tmp_path / "x.json").write_text(
        '{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}'
    )
    ev = COCOEvaluator(name, output_dir=str(tmp_path), use_fast_impl=True)
    assert ev._use_fast_impl is False


def _fake_sdist(tmp_path: Path, text: str) -> Path:
    root = tmp_path / "pb1-detectron2-0.6" / "detectron2" / "data" / "transforms"
    root.mkdir(parents=True)
    (root / "transform.py").write_text(text)
    return tmp_path / "pb1-detectron2-0.6"


def test_patch_that_does_not_match_stops_the_install(tmp_path):
    root = _fake_sdist(tmp_path, "nothing to patch here\n")
    with pytest.raises(inst.InstallError, match="transform.py matched 0 times"):
        inst.apply_patches(root)


def test_sdist_with_wrong_checksum_is_refused(tmp_path):
    bogus = tmp_path / "bogus.tar.gz"
    with tarfile.open(bogus, "w:gz"):
        pass
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(inst.InstallError, match="sha256"):
        inst.fetch_sdist(dest, str(bogus))


def test_missing_sdist_path_is_named(tmp_path):
    with pytest.raises(inst.InstallError, match="nope.tar.gz"):
        inst.fetch_sdist(tmp_path, str(tmp_path / "nope.tar.gz"))


def test_installer_check_reports_installed_detectron2():
    out = subprocess.run(
        [sys.executable, inst.__file__, "--check"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert out.stdout.strip() in {"patched pb1-detectron2 0.6", "official detectron2 with compiled ops"}


@pytest.mark.skipif(emdet.has_compiled_ops(), reason="official detectron2 with compiled ops")
def test_deformable_conv_says_why_it_is_missing():
    import torch
    from detectron2 import _C
    from detectron2.layers import DeformConv

    with pytest.raises(NotImplementedError, match="compiled extension"):
        _C.deform_conv_forward(torch.zeros(1))
    with pytest.raises(NotImplementedError, match="DEFORM_ON_PER_STAGE"):
        _C.modulated_deform_conv_forward(torch.zeros(1))
    # On CPU detectron2 routes plain deformable convolution through torchvision: it still works.
    conv = DeformConv(2, 2, kernel_size=3, padding=1, bias=False)
    x = torch.rand(1, 2, 5, 5)
    plain = torch.nn.functional.conv2d(x, conv.weight, padding=1)
    assert torch.allclose(conv(x, torch.zeros(1, 18, 5, 5)), plain, atol=1e-5)
