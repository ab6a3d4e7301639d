"""MODEL.WEIGHTS: local files, model-zoo names without network, safe unpickling."""
import os
import pickle

import numpy as np
import pytest
import torch

import emdet  # noqa: F401
from emdet.engine.checkpoint import AtomicCheckpointer
from emdet.engine.weights import WeightsError, cache_path_for, resolve_weights, safe_load_pkl

ZOO = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"


def test_empty_means_random_init_and_missing_file_is_named(tmp_path):
    assert resolve_weights("") == ""
    with pytest.raises(WeightsError, match="nope.pth: no such file"):
        resolve_weights(str(tmp_path / "nope.pth"))


def test_zoo_name_without_network_says_what_to_download_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    from detectron2.utils.file_io import PathManager

    def offline(path, **kw):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(PathManager, "get_local_path", offline)
    with pytest.raises(WeightsError) as err:
        resolve_weights(ZOO)
    msg = str(err.value)
    assert "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl" in msg
    expected = tmp_path / "cache" / "detectron2/ImageNetPretrained/MSRA/R-50.pkl"
    assert str(expected) in msg and "Network is unreachable" in msg


def test_zoo_name_found_in_cache_needs_no_network(tmp_path, monkeypatch):
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path))
    cached = cache_path_for(ZOO)
    os.makedirs(os.path.dirname(cached))
    open(cached, "wb").close()
    assert resolve_weights(ZOO) == cached


def test_pkl_with_numpy_arrays_loads_and_code_is_refused(tmp_path):
    good = tmp_path / "good.pkl"
    arrays = {"model": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, "__author__": "x"}
    good.write_bytes(pickle.dumps(arrays))
    assert np.array_equal(safe_load_pkl(str(good))["model"]["w"], arrays["model"]["w"])

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"model": Evil()}))
    with pytest.raises(WeightsError, match="refusing to load"):
        safe_load_pkl(str(bad))


def test_checkpointer_loads_pth_and_zoo_style_pkl(tmp_path):
    model = torch.nn.Linear(3, 2)
    ckpt = AtomicCheckpointer(model, save_dir=str(tmp_path))
    ckpt.save("model_final")
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    other = torch.nn.Linear(3, 2)
    AtomicCheckpointer(other).load(str(tmp_path / "model_final.pth"))
    assert torch.equal(other.weight, model.weight)

    pkl = tmp_path / "zoo.pkl"
    w = np.full((2, 3), 0.5, np.float32)
    pkl.write_bytes(pickle.dumps({"model": {"weight": w, "bias": np.zeros(2, np.float32)},
                                  "__author__": "test"}))
    AtomicCheckpointer(other).load(str(pkl))
    assert torch.allclose(other.weight, torch.full((2, 3), 0.5))


def _r18_cfg(weights: str):
    """The shipped ImageNet-start recipe, with these weights."""
    from pathlib import Path

    from emdet.config import load_config

    config = Path(__file__).resolve().parents[2] / "configs/real/mask_rcnn_imagenet_cpu.yaml"
    return load_config(config, ["MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu"])


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torchvision_resnet_file_becomes_the_detectron2_backbone(tmp_path, suffix):
    """Known answer: the converted backbone computes exactly torchvision's features."""
    torchvision = pytest.importorskip("torchvision")
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so the norms must be mapped
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    tv.eval()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth":
        torch.save(tv.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in tv.state_dict().items()}, str(path))
    cfg = _r18_cfg(str(path))
    from emdet.engine.weights import IMAGENET_INPUT

    for key, value in IMAGENET_INPUT.items():  # the recipe gives the input torchvision expects
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert node == value, key
    model = build_model(cfg)
    AtomicCheckpointer(model).load(str(path))
    model.eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        expected = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(
            x)))))))).numpy()
        got = model.backbone.bottom_up(x)["res5"].numpy()
    assert got.shape == expected.shape == (1, 512, 3, 4)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # and not by chance: a randomly initialised backbone is far off
    fresh = build_model(_r18_cfg("")).eval()
    with torch.no_grad():
        assert not np.allclose(fresh.backbone.bottom_up(x)["res5"].numpy(), expected, atol=1e-2)


def test_torchvision_names_are_renamed_as_detectron2_does():
    from emdet.engine.weights import is_torchvision_resnet, torchvision_resnet_to_detectron2

    state = {k: torch.zeros(1) for k in (
        "conv1.weight", "bn1.running_var", "bn1.num_batches_tracked", "layer1.0.conv2.weight",
        "layer1.0.bn2.bias", "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean",
        "layer4.1.bn3.weight", "fc.weight", "fc.bias")}
    assert is_torchvision_resnet(state)
    assert not is_torchvision_resnet({"backbone.bottom_up.stem.conv1.weight": 0})
    out = torchvision_resnet_to_detectron2(state)
    assert out["matching_heuristics"] and sorted(out["model"]) == sorted([
        "stem.conv1.weight", "stem.conv1.norm.running_var", "res2.0.conv2.weight",
        "res2.0.conv2.norm.bias", "res3.0.shortcut.weight", "res3.0.shortcut.norm.running_mean",
        "res5.1.conv3.norm.weight"])


def test_shipped_model_names_resolve_and_a_damaged_file_is_refused(tmp_path, monkeypatch):
    import json

    from emdet.engine import weights

    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "m.safetensors").write_bytes(b"weights")
    entry = {"file": "m.safetensors", "sha256": weights.sha256_of(zoo / "m.safetensors")}
    (zoo / "models.json").write_text(json.dumps({"tiny": entry}))
    monkeypatch.setattr(weights, "ZOO_DIR", str(zoo))
    assert resolve_weights("emdet://tiny") == str(zoo / "m.safetensors")
    with pytest.raises(WeightsError, match="no such shipped model; emdet ships emdet://tiny"):
        resolve_weights("emdet://other")
    (zoo / "m.safetensors").write_bytes(b"weightz")
    with pytest.raises(WeightsError, match="damaged or was replaced"):
        resolve_weights("emdet://tiny")
    (zoo / "m.safetensors").unlink()
    with pytest.raises(WeightsError, match="missing from this install"):
        resolve_weights("emdet://tiny")


def test_exported_model_loads_by_name_with_its_threshold(tmp_path, monkeypatch):
    from emdet.engine import weights
    from emdet.evaluation.threshold import read_threshold

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    torch.save({"model": model.state_dict(), "iteration": 99, "score_threshold": 0.42},
               tmp_path / "model_best.pth")
    entry = weights.export_to_zoo(tmp_path / "model_best.pth", "tiny-net", config="c.yaml",
                                  zoo_dir=tmp_path / "zoo")
    assert entry["score_threshold"] == 0.42 and entry["iteration"] == 99
    monkeypatch.setattr(weights, "ZOO_DIR", str(tmp_path / "zoo"))
    assert weights.model_zoo()["tiny-net"]["sha256"] == weights.sha256_of(
        tmp_path / "zoo" / "tiny-net.safetensors")
    assert read_threshold("emdet://tiny-net") == pytest.approx(0.42)
    stored = weights.load_weights_file(resolve_weights("emdet://tiny-net"))
    assert all(v.dtype == torch.float16 for v in stored.values())
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    AtomicCheckpointer(fresh).load("emdet://tiny-net")
    x = torch.randn(5, 4)
    assert next(fresh.parameters()).dtype == torch.float32
    np.testing.assert_allclose(fresh(x).detach(), model(x).detach(), rtol=1e-2, atol=1e-2)
    with pytest.raises(WeightsError, match="lower-case"):
        weights.export_to_zoo(tmp_path / "model_best.pth", "Bad Name", config="c.yaml",
                              zoo_dir=tmp_path / "zoo")


def test_the_shipped_particles_model_loads_by_name_into_the_real_recipe():
    """emdet://em-particles-r18 is in the repository, sha256-checked, and fills every weight of
    configs/real/mask_rcnn_cpu.yaml (nothing left at random initialisation)."""
    from pathlib import Path

    from detectron2.modeling import build_model
    from safetensors.torch import load_file

    from emdet.config import load_config
    from emdet.engine.weights import model_zoo
    from emdet.evaluation.threshold import read_threshold

    entry = model_zoo()["em-particles-r18"]
    path = resolve_weights("emdet://em-particles-r18")
    assert Path(path).stat().st_size == entry["bytes"] < 50 * 2**20
    assert 0 < read_threshold("emdet://em-particles-r18") < 1
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs/real/mask_rcnn_cpu.yaml",
                      ["MODEL.DEVICE", "cpu"])
    assert cfg.MODEL.WEIGHTS == "emdet://em-particles-r18"
    model = build_model(cfg)
    AtomicCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    stored = load_file(path)
    state = model.state_dict()
    assert sorted(stored) == sorted(state)
    for key, value in stored.items():
        assert torch.equal(state[key], value.float()), key
