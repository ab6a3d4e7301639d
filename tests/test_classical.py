"""The classical particle baseline and the instance scorer, on images with known answers."""
import json
from pathlib import Path

import numpy as np
import pytest

from emdet.classical import (
    ClassicalParams,
    coco_to_labels,
    label_f1,
    labels_to_annotations,
    run_baseline,
    segment_particles,
    tune,
)
from emdet.evaluation.instances import InstanceScoreError, score_instances


def discs(shape, centres, radius, *, dark=True, noise=0.05, seed=0):
    """A grey image of discs and their instance labels (later discs on top)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centres):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = i + 1
    image = np.where(labels > 0, 0.25, 0.75) if dark else np.where(labels > 0, 0.75, 0.25)
    return (image + rng.normal(0, noise, shape)).astype(np.float32), labels


def test_isolated_dark_discs_are_found_exactly():
    image, truth = discs((96, 128), [(20, 20), (20, 90), (70, 40), (70, 100)], 9)
    labels, scores = segment_particles(image, ClassicalParams(polarity="dark", split="none",
                                                              min_area=20))
    assert labels.max() == 4 and scores.shape == (4,)
    assert np.all(scores > 0.9)  # discs are convex: solidity near 1
    assert label_f1(labels, scores, truth) == (4, 4, 4)
    # the wrong polarity finds the background, not the discs
    bright, s = segment_particles(image, ClassicalParams(polarity="bright", split="none"))
    assert label_f1(bright, s, truth)[0] == 0
    # auto: the phase covering the image border is the background
    auto, s = segment_particles(image, ClassicalParams(polarity="auto", split="none"))
    assert label_f1(auto, s, truth) == (4, 4, 4)


def test_touching_discs_are_split_by_the_watershed():
    image, truth = discs((80, 120), [(40, 40), (40, 66)], 14, noise=0.0)  # overlap 2 px
    whole, s = segment_particles(image, ClassicalParams(polarity="dark", split="none",
                                                        blur=0))
    assert whole.max() == 1
    for split, size in (("hmax", 2.0), ("peaks", 8.0)):
        labels, s = segment_particles(image, ClassicalParams(polarity="dark", split=split,
                                                             split_size=size, blur=0))
        assert labels.max() == 2, split
        assert label_f1(labels, s, truth) == (2, 2, 2), split


def test_tuning_finds_polarity_and_size_that_the_defaults_miss():
    pairs = [discs((96, 96), [(30, 30), (30, 70), (70, 50)], 8, dark=False, noise=0.15, seed=k)
             for k in range(3)]
    images, truths = zip(*pairs, strict=True)
    start = ClassicalParams(polarity="dark", blur=0, split="none", min_area=1)
    tp = sum(label_f1(*segment_particles(im, start), t)[0] for im, t in zip(images, truths,
                                                                            strict=True))
    assert tp == 0
    best, f1, tried = tune(images, truths, start=start)
    assert best.polarity in ("bright", "auto") and f1 == 1.0
    assert tried[0]["f1"] == 1.0 and len(tried) > 10
    assert all(tried[i]["f1"] >= tried[i + 1]["f1"] for i in range(len(tried) - 1))
    with pytest.raises(ValueError, match="2 images but 1 label"):
        tune(images[:2], truths[:1])
    with pytest.raises(ValueError, match="polarity='grey'"):
        ClassicalParams(polarity="grey")
    with pytest.raises(ValueError, match="unknown key"):
        ClassicalParams.from_dict({"polarity": "dark", "sigma": 2})


def _coco(labels_list, scores_list=None, *, names=None):
    images, anns = [], []
    for k, labels in enumerate(labels_list):
        h, w = labels.shape
        images.append({"id": k + 1, "file_name": (names or [f"im{j}.png" for j in
                                                           range(len(labels_list))])[k],
                       "height": h, "width": w})
        scores = (np.ones(labels.max()) if scores_list is None else scores_list[k])
        for a in labels_to_annotations(labels, scores):
            anns.append(a | {"id": len(anns) + 1, "image_id": k + 1})
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "p"}]}


def test_scorer_gives_the_known_figures():
    _, t1 = discs((64, 64), [(16, 16), (16, 48), (48, 32)], 6)
    _, t2 = discs((64, 64), [(32, 32)], 10)
    gt = _coco([t1, t2])
    # labels -> COCO -> labels is exact
    anns1 = [a for a in gt["annotations"] if a["image_id"] == 1]
    assert np.array_equal(coco_to_labels(anns1, 64, 64), t1)
    perfect = score_instances(gt, _coco([t1, t2], names=["sub/im0.png", "im1.png"]))
    assert perfect["ap"] == pytest.approx(100) and perfect["ap50"] == pytest.approx(100)
    assert (perfect["f1"], perfect["count_error"], perfect["median_diameter_error"]) == (1, 0, 0)
    assert perfect["n_found"] == perfect["n_annotated"] == 4
    # image 1 loses a disc and gains a false one far from any particle
    _, p1 = discs((64, 64), [(16, 16), (16, 48), (58, 5)], 6)
    fig = score_instances(gt, _coco([p1, t2]))
    assert fig["precision"] == fig["recall"] == fig["f1"] == pytest.approx(3 / 4)
    assert fig["count_error"] == 0  # 3 found for 3 annotated, 1 for 1
    # a threshold drops the low-scoring false object: precision 1, recall 3/4
    fig = score_instances(gt, _coco([p1, t2], [np.array([0.9, 0.9, 0.1]), np.array([0.9])]),
                          score_threshold=0.5)
    assert fig["precision"] == 1 and fig["recall"] == pytest.approx(3 / 4)
    assert fig["count_error"] == pytest.approx((1 / 3 + 0) / 2)
    assert fig["count_error_total"] == pytest.approx(1 / 4)
    # sizes: image 2's one disc found at radius 5 instead of 10; image 1 exact
    _, small = discs((64, 64), [(32, 32)], 5)
    fig = score_instances(gt, _coco([t1, small]))
    d = lambda labels: 2 * np.sqrt((labels > 0).sum() / np.pi)  # noqa: E731
    assert fig["median_diameter_error_per_image"] == pytest.approx(
        (0 + abs(d(small) - d(t2)) / d(t2)) / 2)
    assert fig["median_diameter_error"] == 0  # pooled medians: three small discs each side
    # a COCO results list (image ids of gt) scores the same as the set
    results = [a for a in _coco([t1, t2])["annotations"]]
    assert score_instances(gt, results)["f1"] == 1
    with pytest.raises(InstanceScoreError, match="none of its 1 images .*other.png"):
        score_instances(gt, _coco([t1], names=["other.png"]))
    # predictions of a whole folder score against its annotated part; unpredicted images
    # count as found nothing
    folder = score_instances(gt, _coco([t2, t1], names=["im1.png", "extra.png"]))
    assert folder["n_found"] == 1 and folder["recall"] == pytest.approx(1 / 4)


def test_scorer_pairs_the_frames_of_a_stack_by_frame():
    _, t0 = discs((64, 64), [(16, 16), (16, 48), (48, 32)], 6)
    _, t1 = discs((64, 64), [(32, 32)], 10)

    def stack(labels_list, frames):
        coco = _coco(labels_list, names=["stack.tif"] * len(labels_list))
        for im, frame in zip(coco["images"], frames, strict=True):
            im.update(frame=frame, n_frames=2)
        return coco

    gt = stack([t0, t1], [0, 1])
    # predict numbers images its own way (frame 1 first here): pairs are by file and frame
    fig = score_instances(gt, stack([t1, t0], [1, 0]))
    assert (fig["f1"], fig["count_error"], fig["n_found"]) == (1, 0, 4)
    # the frames swapped: every object is in the wrong frame
    swapped = score_instances(gt, stack([t1, t0], [0, 1]))
    assert swapped["f1"] == 0 and swapped["count_error"] > 0


def test_aligned_results_let_pycocotools_score_predict_output(tmp_path):
    import contextlib
    import io
    import subprocess
    import sys

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    _, t1 = discs((64, 64), [(16, 16), (16, 48), (48, 32)], 6)
    _, t2 = discs((64, 64), [(32, 32)], 10)
    gt = _coco([t1, t2])
    pred = _coco([t2, t1], names=["im1.png", "im0.png"])  # predict's own order and ids
    for im in pred["images"]:
        im["id"] += 100
    for a in pred["annotations"]:
        a["image_id"] += 100
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    tool = Path(__file__).resolve().parents[1] / "tools" / "score_instances.py"
    subprocess.run([sys.executable, str(tool), "--annotations", str(tmp_path / "gt.json"),
                    "--predictions", str(tmp_path / "pred.json"),
                    "--results", str(tmp_path / "results.json")], check=True,
                   capture_output=True)
    results = json.loads((tmp_path / "results.json").read_text())
    assert sorted({r["image_id"] for r in results}) == [1, 2] and len(results) == 4
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(tmp_path / "gt.json"))
        ev = COCOeval(coco_gt, coco_gt.loadRes(str(tmp_path / "results.json")), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)  # the ids line up: every object found
    # the unaligned file scores nothing in pycocotools (its image ids are not the annotated)
    with pytest.raises(AssertionError, match="do not correspond"):
        coco_gt.loadRes([a for a in pred["annotations"]])


def test_run_baseline_writes_everything_or_refuses(tmp_path):
    from PIL import Image

    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    sets = {}
    for split, seeds in (("train", (1, 2)), ("test", (3,))):
        labels_list, names = [], []
        for s in seeds:
            image, labels = discs((80, 80), [(20, 20), (20, 60), (60, 40)], 8, seed=s)
            name = f"im{s}.png"
            Image.fromarray((image.clip(0, 1) * 255).astype(np.uint8)).save(root / "images" / name)
            labels_list.append(labels)
            names.append(name)
        sets[split] = root / "annotations" / f"{split}.json"
        sets[split].parent.mkdir(exist_ok=True)
        sets[split].write_text(json.dumps(_coco(labels_list, names=names)))
    out = tmp_path / "out"
    result = run_baseline(sets["train"], sets["test"], out, progress=False)
    assert result["train_f1"] == 1.0 and result["figures"]["f1"] == 1.0
    assert sorted(p.name for p in out.iterdir()) == ["figures.json", "params.json",
                                                      "predictions.json"]
    saved = json.loads((out / "params.json").read_text())
    assert ClassicalParams.from_dict(saved["params"]) == result["params"]
    pred = json.loads((out / "predictions.json").read_text())
    assert len(pred["annotations"]) == 3 and pred["images"][0]["file_name"] == "im3.png"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError, match="--overwrite"):
        run_baseline(sets["train"], sets["test"], out, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    again = run_baseline(None, sets["test"], out, params=result["params"], overwrite=True,
                         progress=False)
    assert again["figures"] == result["figures"]
