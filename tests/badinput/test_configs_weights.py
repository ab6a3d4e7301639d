"""Hostile and broken configs and weights files, through every tool that reads them.

Weights files come from other people (a colleague's model, a download) and are not trusted: a
pickle can run any code when loaded. Every tool loads weights through
:func:`emdet.engine.weights.load_weights_file`, so a crafted ``.pkl`` or ``.pth`` must be refused
before its code runs (the marker file it would create must not appear), with a message naming
the file, and without torch's advice to load it with ``weights_only=False``.

Configs are emdet's own and are trusted not to be malicious, but a typo must still end in a
message naming the file and the key, not a traceback: ``_BASE_`` cycles, missing bases,
``_BASE_: 42``, ``SOLVER.MAX_ITER -5``, ``SOLVER.BASE_LR .nan``, YAML tags.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from tests.badinput.harness import REPO, assert_refused, run_tool, snapshot

QUICK = REPO / "configs/quick_schedules/vesicles_mask_rcnn_instant_test.yaml"
UNET = REPO / "configs/unet/graphene_contamination.yaml"
HEATMAP = REPO / "configs/unet/merons_heatmap.yaml"


class _Evil:
    """Unpickling this creates ``marker`` (any code could run instead)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_pkl(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"model": {"w": np.zeros(3)}, "x": _Evil(marker)}))


def _evil_pth(path: Path, marker: Path) -> None:
    import torch

    torch.save({"model": {"w": torch.zeros(3)}, "x": _Evil(marker)}, path)


def _evil_legacy_pth(path: Path, marker: Path) -> None:
    import torch

    torch.save({"model": {}, "x": _Evil(marker)}, path, _use_new_zipfile_serialization=False)


def _class_pkl(path: Path, marker: Path) -> None:  # noqa: ARG001 - no code, still a class
    from collections import OrderedDict

    path.write_bytes(pickle.dumps({"model": OrderedDict(w=np.zeros(2)), "s": {1, 2}}))


def _truncated_pth(path: Path, marker: Path) -> None:  # noqa: ARG001
    import torch

    torch.save({"model": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:300])


def _text(path: Path, marker: Path) -> None:  # noqa: ARG001
    path.write_text("<html>403 Forbidden</html>\n")


def _empty(path: Path, marker: Path) -> None:  # noqa: ARG001
    path.write_bytes(b"")


def _bad_safetensors(path: Path, marker: Path) -> None:  # noqa: ARG001
    path.write_bytes((10**9).to_bytes(8, "little") + b'{"w": {"dtype"')


#: name -> (file name, maker)
WEIGHTS = {
    "evil_pkl": ("evil.pkl", _evil_pkl),
    "evil_pth": ("evil.pth", _evil_pth),
    "evil_legacy_pth": ("evil_legacy.pth", _evil_legacy_pth),
    "class_in_pkl": ("classes.pkl", _class_pkl),
    "truncated_pth": ("cut.pth", _truncated_pth),
    "html_as_pth": ("page.pth", _text),
    "empty_pth": ("empty.pth", _empty),
    "broken_safetensors": ("broken.safetensors", _bad_safetensors),
}


def _image_folder(tmp_path: Path) -> Path:
    from emdet.data.io import write_tiff

    folder = tmp_path / "images"
    folder.mkdir()
    write_tiff(folder / "a.tif", np.random.default_rng(0).integers(0, 255, (96, 96), np.uint8),
               pixel_size=1.0, unit="nm")
    return folder


def _commands(weights: Path, images: Path, out: Path) -> dict[str, tuple[str, list]]:
    return {
        "predict": ("predict", ["--config-file", QUICK, "--input", images, "--output", out,
                                "--quiet", "MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu"]),
        "train_net_eval": ("train_net", ["--config-file", QUICK, "--eval-only",
                                         "MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu",
                                         "OUTPUT_DIR", out, "DATASETS.TRAIN", "()",
                                         "DATASETS.TEST", "()"]),
        "segment": ("segment", ["--method", "unet", "--config-file", UNET, "--weights", weights,
                                "--input", images / "a.tif", "--output", out, "--quiet"]),
        "detect_points": ("detect_points", ["--config-file", HEATMAP, "--weights", weights,
                                            "--input", images / "a.tif", "--output", out,
                                            "--quiet"]),
    }


TOOLS = ("predict", "train_net_eval", "segment", "detect_points")


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("case", sorted(WEIGHTS))
def test_weights_are_refused_before_any_code_runs(tmp_path, monkeypatch, tool, case):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMDET_DATASETS", str(tmp_path / "no_datasets"))
    name, maker = WEIGHTS[case]
    marker = tmp_path / "PWNED"
    weights = tmp_path / "downloads" / name
    weights.parent.mkdir()
    maker(weights, marker)
    images = _image_folder(tmp_path)
    before = snapshot(tmp_path)
    script, args = _commands(weights, images, tmp_path / "out")[tool]
    outcome = run_tool(script, args, case=f"weights/{tool}/{case}")
    assert not marker.exists(), "the weights file ran code"
    assert_refused(outcome, name)
    assert "weights_only=False" not in outcome.message
    after = snapshot(tmp_path)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert not {k for k in changed if not k.startswith("out/")}, changed
    assert not [k for k in after if k.startswith("out/") and k.endswith(
        ("predictions.json", ".csv", ".tif", ".png"))], "output from a refused model"


def _yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _cycle(d: Path) -> Path:
    _yaml(d / "b.yaml", "_BASE_: a.yaml\n")
    return _yaml(d / "a.yaml", "_BASE_: b.yaml\n")


def _self_cycle(d: Path) -> Path:
    return _yaml(d / "self.yaml", "_BASE_: self.yaml\n")


def _quick_base(d: Path, extra: str) -> Path:
    return _yaml(d / "cfg.yaml", f"_BASE_: {QUICK}\n{extra}")


#: name -> (writer of the config folder, returning the file; extra opts; words the message needs)
CONFIGS = {
    "base_cycle": (_cycle, [], ["a.yaml", "_BASE_", "cycle"]),
    "base_self_cycle": (_self_cycle, [], ["self.yaml", "_BASE_"]),
    "base_missing": (lambda d: _yaml(d / "cfg.yaml", "_BASE_: nowhere/Base.yaml\n"), [],
                     ["cfg.yaml", "_BASE_", "nowhere/Base.yaml"]),
    "base_number": (lambda d: _yaml(d / "cfg.yaml", "_BASE_: 42\n"), [], ["cfg.yaml", "_BASE_"]),
    "base_list": (lambda d: _yaml(d / "cfg.yaml", "_BASE_: [a.yaml, b.yaml]\n"), [],
                  ["cfg.yaml", "_BASE_"]),
    "max_iter_negative": (lambda d: _quick_base(d, "SOLVER:\n  MAX_ITER: -5\n"), [],
                          ["SOLVER.MAX_ITER", "-5"]),
    "max_iter_opt_negative": (lambda d: _quick_base(d, ""), ["SOLVER.MAX_ITER", "-5"],
                              ["SOLVER.MAX_ITER"]),
    "base_lr_nan": (lambda d: _quick_base(d, "SOLVER:\n  BASE_LR: .nan\n"), [],
                    ["SOLVER.BASE_LR"]),
    "base_lr_opt_nan": (lambda d: _quick_base(d, ""), ["SOLVER.BASE_LR", ".nan"],
                        ["SOLVER.BASE_LR"]),
    "base_lr_inf": (lambda d: _quick_base(d, "SOLVER:\n  BASE_LR: .inf\n"), [],
                    ["SOLVER.BASE_LR"]),
    "base_lr_zero": (lambda d: _quick_base(d, "SOLVER:\n  BASE_LR: 0.0\n"), [],
                     ["SOLVER.BASE_LR"]),
    "base_lr_text": (lambda d: _quick_base(d, "SOLVER:\n  BASE_LR: fast\n"), [],
                     ["SOLVER.BASE_LR"]),
    "ims_per_batch_zero": (lambda d: _quick_base(d, "SOLVER:\n  IMS_PER_BATCH: 0\n"), [],
                           ["SOLVER.IMS_PER_BATCH"]),
    "unknown_key": (lambda d: _quick_base(d, "SOLVER:\n  MAX_ITERS: 10\n"), [],
                    ["MAX_ITERS"]),
    "unknown_opt": (lambda d: _quick_base(d, ""), ["MODEL.WEIGTHS", "x.pth"], ["MODEL.WEIGTHS"]),
    "odd_opts": (lambda d: _quick_base(d, ""), ["SOLVER.MAX_ITER"], ["SOLVER.MAX_ITER"]),
    "python_tag": (lambda d: _yaml(d / "cfg.yaml",
                                   "SOLVER: !!python/object/apply:os.system ['touch PWNED']\n"),
                   [], ["cfg.yaml"]),
    "yaml_syntax": (lambda d: _yaml(d / "cfg.yaml", "SOLVER:\n  MAX_ITER: [1, 2\n"), [],
                    ["cfg.yaml"]),
    "top_level_list": (lambda d: _yaml(d / "cfg.yaml", "- SOLVER\n- MODEL\n"), [],
                       ["cfg.yaml"]),
    "binary_file": (lambda d: (d / "cfg.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
                    and d / "cfg.yaml", [], ["cfg.yaml"]),
    "missing_file": (lambda d: d / "typo.yaml", [], ["typo.yaml"]),
}


@pytest.mark.parametrize("tool", ("train_net", "predict"))
@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_configs_are_refused_with_file_and_key(tmp_path, monkeypatch, tool, case):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMDET_DATASETS", str(tmp_path / "no_datasets"))
    writer, opts, needles = CONFIGS[case]
    cfg_dir = tmp_path / "configs"
    cfg_dir.mkdir()
    config = writer(cfg_dir)
    before = snapshot(cfg_dir)
    if tool == "train_net":
        args = ["--config-file", config, *opts]
    else:
        images = _image_folder(tmp_path)
        args = ["--config-file", config, "--input", images, "--output", tmp_path / "out",
                "--quiet", *opts]
    outcome = run_tool(tool, args, case=f"configs/{tool}/{case}")
    assert not (tmp_path / "PWNED").exists()
    assert_refused(outcome, *needles)
    assert snapshot(cfg_dir) == before
    assert not (tmp_path / "out").exists() or snapshot(tmp_path / "out") == {}


@pytest.mark.parametrize("case", ["base_cycle", "max_iter_negative", "base_lr_nan",
                                  "python_tag", "unknown_key"])
def test_dense_configs_are_refused_too(tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    writer, opts, needles = CONFIGS[case]
    cfg_dir = tmp_path / "configs"
    cfg_dir.mkdir()
    config = writer(cfg_dir)
    if case in ("max_iter_negative", "base_lr_nan", "unknown_key"):
        text = config.read_text().replace(str(QUICK), str(UNET))
        config.write_text(text)
        needles = [n for n in needles if n != "-5"]
    outcome = run_tool("train_unet", ["--config-file", config, *opts],
                       case=f"configs/train_unet/{case}")
    assert not (tmp_path / "PWNED").exists()
    assert_refused(outcome, *needles)
