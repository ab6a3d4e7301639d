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
