"""The classical point baseline (difference of Gaussians + peak_local_max), on known answers."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from emdet.classical_points import (
    DoGParams,
    PointsBaselineError,
    _candidates,
    _select,
    dog_response,
    find_points,
    read_params_json,
    run_points_baseline,
    tune_points,
)
from emdet.evaluation.points import match_points, point_metrics

REPO = Path(__file__).resolve().parents[1]


def gaussian_peaks(shape=(96, 112), spacing=16, sigma=1.5, amp=40.0, bg=10.0, *, seed=0,
                   noise=True):
    """Counts of Gaussian peaks on a flat background at known sub-pixel ``(x, y)``."""
    rng = np.random.default_rng(seed)
    ys = np.arange(spacing / 2, shape[0] - 4, spacing)
    xs = np.arange(spacing / 2, shape[1] - 4, spacing)
    xy = np.array([(x, y) for y in ys for x in xs]) + rng.uniform(-2, 2, (len(ys) * len(xs), 2))
    yy, xx = np.mgrid[: shape[0], : shape[1]] + 0.5  # COCO pixel centres
    lam = np.full(shape, bg)
    for x, y in xy:
        lam += amp * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return (rng.poisson(lam).astype(np.uint16) if noise else lam), xy


PARAMS = DoGParams(sigma=1.5, ratio=2.0, threshold=0.05, min_distance=4)


def test_noisy_gaussian_peaks_are_found_within_a_pixel_and_none_extra():
    image, truth = gaussian_peaks()
    xy, scores = find_points(image, PARAMS)
    assert xy.shape == (len(truth), 2) and scores.shape == (len(truth),)
    _, gi, d = match_points(xy, truth, radius=1.0)
    assert len(d) == len(truth) and len(np.unique(gi)) == len(truth)
    assert d.max() < 0.5  # sub-pixel refinement: 0.31 px at worst under Poisson noise
    assert np.all(scores > PARAMS.threshold) and np.all(np.diff(scores) <= 0)
    # pixel centres only: still within a pixel, but coarser
    xy, _ = find_points(image, DoGParams(**PARAMS.to_dict() | {"subpixel": False}))
    _, _, d_px = match_points(xy, truth, radius=1.0)
    assert len(d_px) == len(truth) and d_px.mean() > d.mean()
    assert np.allclose(xy % 1, 0.5)


def test_coordinates_are_coco_continuous_and_noise_free_peaks_are_exact():
    yy, xx = np.mgrid[:40, :50]
    # blobs centred on pixels (row 10, col 20) and (25, 35); the first covers [20, 21] x [10, 11]
    image = sum(np.exp(-((xx - c) ** 2 + (yy - r) ** 2) / 8.0) for r, c in ((10, 20), (25, 35)))
    xy, _ = find_points(image, DoGParams(sigma=1.5, threshold=0.01))
    assert np.allclose(sorted(xy.tolist()), [[20.5, 10.5], [35.5, 25.5]], atol=1e-5)
    image, truth = gaussian_peaks(noise=False)
    xy, _ = find_points(image, PARAMS)
    _, _, d = match_points(xy, truth, radius=1.0)
    assert len(xy) == len(d) == len(truth) and d.max() < 0.02


def test_dark_polarity_finds_dips_and_bright_does_not():
    image, truth = gaussian_peaks()
    dips = image.max() - image
    xy, _ = find_points(dips, DoGParams(**PARAMS.to_dict() | {"polarity": "dark"}))
    _, _, d = match_points(xy, truth, radius=1.0)
    assert len(xy) == len(d) == len(truth)
    assert np.allclose(dog_response(dips, DoGParams(polarity="dark")),
                       dog_response(image, DoGParams()), atol=1e-5)
    bright, _ = find_points(dips, PARAMS)
    assert len(match_points(bright, truth, radius=3.0)[0]) == 0


def test_degenerate_images_give_no_points():
    for image in (np.zeros((32, 32), np.uint16), np.full((20, 30, 3), 7.0)):
        xy, scores = find_points(image, PARAMS)
        assert xy.shape == (0, 2) and scores.shape == (0,)
    with pytest.raises(ValueError, match=r"shape \(4, 4, 4, 4\)"):
        find_points(np.zeros((4, 4, 4, 4)))


def test_threshold_filtering_equals_a_fresh_search():
    """The tuning finds the peaks once at the lowest threshold and filters them."""
    image, _ = gaussian_peaks(amp=15.0, seed=3)
    response = dog_response(image, PARAMS)
    low = _candidates(response, PARAMS.min_distance, 0.0, True)
    for t in (0.0, 0.01, 0.03, 0.05, 0.1, 0.2):
        xy, scores = find_points(image, DoGParams(**PARAMS.to_dict() | {"threshold": t}))
        fxy, fscores = _select(low, t)
        assert np.array_equal(xy, fxy) and np.array_equal(scores, fscores), t


def test_params_validate_and_round_trip():
    p = DoGParams(sigma=1.25, ratio=3, threshold=0.1, min_distance=5.0, polarity="dark")
    assert p.min_distance == 5 and isinstance(p.min_distance, int) and p.sigma_high == 3.75
    assert DoGParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    for bad, match in (({"sigma": 0}, "sigma=0.0: expected a Gaussian sigma > 0"),
                       ({"ratio": 1.0}, "ratio=1.0: expected > 1"),
                       ({"threshold": -0.1}, "threshold=-0.1"),
                       ({"threshold": float("nan")}, "threshold=nan: expected a finite"),
                       ({"min_distance": 2.5}, "min_distance=2.5: expected a whole number"),
                       ({"min_distance": 0}, "min_distance=0"),
                       ({"polarity": "auto"}, "polarity='auto': expected one of"),
                       ({"sigma": "2"}, "sigma='2': expected a finite number"),
                       ({"subpixel": 1}, "subpixel=1")):
        with pytest.raises(ValueError, match=match):
            DoGParams(**bad)
    with pytest.raises(ValueError, match=r"params.json: unknown key\(s\) \['blur'\]"):
        DoGParams.from_dict({"blur": 1.0}, "params.json")
    with pytest.raises(ValueError, match="params.json: min_distance=-1"):
        DoGParams.from_dict({"min_distance": -1}, "params.json")


# --------------------------------------------------------------------------------------------
# Synthetic atoms: tuning, the run, the CLI
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def atoms(tmp_path_factory):
    from emdet.data.synthetic import make_synthetic

    root = make_synthetic("atoms", num=4, size=128, seed=0,
                          output=tmp_path_factory.mktemp("synth") / "atoms",
                          split="train=0.5,test=0.5")
    return root


def _truth(coco_json):
    """Annotated points per image, read with plain json (independent of the module)."""
    data = json.loads(Path(coco_json).read_text())
    return [np.array([a["point"] for a in data["annotations"] if a["image_id"] == im["id"]])
            for im in data["images"]], data


def test_tuning_on_atoms_beats_a_bad_setting(atoms):
    from emdet.data.io import read_image

    truths, data = _truth(atoms / "annotations" / "train.json")
    images = [read_image(atoms / "images" / im["file_name"])[0] for im in data["images"]]
    assert images[0].dtype == np.uint16
    bad = DoGParams(sigma=6.0, ratio=5.0, threshold=0.3, min_distance=12, polarity="dark")
    bad_f1 = point_metrics([find_points(im, bad)[0] for im in images], truths, radius=3,
                           zero_division=0.0).loc["pooled", "f1"]
    lines = []
    best, f1, tried = tune_points(images, truths, 3.0, start=bad, progress=lines.append)
    assert bad_f1 < 0.2 and f1 > 0.85 and f1 > bad_f1 + 0.6
    assert best.polarity == "bright" and lines and "F1" in lines[-1]
    direct = point_metrics([find_points(im, best)[0] for im in images], truths, radius=3)
    assert direct.loc["pooled", "f1"] == pytest.approx(f1)
    assert tried[0]["f1"] == pytest.approx(f1) and len(tried) > 50
    assert all(tried[i]["f1"] >= tried[i + 1]["f1"] for i in range(len(tried) - 1))
    with pytest.raises(ValueError, match="2 images but 1 point sets"):
        tune_points(images, truths[:1])
    with pytest.raises(ValueError, match=r"unknown grid key\(s\) \['blur'\]"):
        tune_points(images, truths, grid={"blur": (1,)})
    with pytest.raises(ValueError, match=r"grid\['sigma'\]: sigma=-1.0"):
        tune_points(images, truths, grid={"sigma": (1.0, -1.0)})


def test_run_writes_figures_that_match_point_metrics(atoms, tmp_path):
    train, test = (atoms / "annotations" / f"{s}.json" for s in ("train", "test"))
    out = tmp_path / "run"
    result = run_points_baseline(train, test, out, 3.0, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["figures.json", "params.json",
                                                      "points.csv"]
    truths, data = _truth(test)
    figures = json.loads((out / "figures.json").read_text())
    direct = point_metrics([xy for xy, _ in result["points"]], truths, radius=3.0)
    pooled = direct.loc["pooled"]
    for key in ("precision", "recall", "f1", "fp_rate", "fn_rate", "tp", "fp", "fn"):
        assert figures[key] == pytest.approx(pooled[key]), key
    assert figures["n_found"] == pooled["n_pred"] and figures["n_annotated"] == pooled["n_gt"]
    per = direct.drop(index="pooled")
    assert figures["mean_per_image"]["f1"] == pytest.approx(per["f1"].mean())
    counts = np.abs(per["n_pred"] - per["n_gt"]) / per["n_gt"]
    assert figures["count_error"] == pytest.approx(counts.mean())
    assert figures["count_error_total"] == pytest.approx(
        abs(pooled["n_pred"] - pooled["n_gt"]) / pooled["n_gt"])
    assert [r["image"] for r in figures["per_image"]] == [im["file_name"]
                                                           for im in data["images"]]
    assert figures["f1"] > 0.75  # two small test images; 0.95 on 8 of 256 px
    saved = json.loads((out / "params.json").read_text())
    assert DoGParams.from_dict(saved["params"]) == result["params"]
    assert saved["train_f1"] == pytest.approx(result["train_f1"]) and saved["match_radius"] == 3
    csv_lines = (out / "points.csv").read_text().splitlines()
    assert csv_lines[0] == "image,x,y,score"
    assert len(csv_lines) - 1 == figures["n_found"]
    # the same run again is refused, then replaced with overwrite=True
    with pytest.raises(PointsBaselineError, match="already exist.*overwrite"):
        run_points_baseline(result["params"], test, out, progress=False)
    again = run_points_baseline(result["params"], test, out, overwrite=True, progress=False)
    assert again["train_f1"] is None and (out / "points.csv").read_text().splitlines() == csv_lines


def _cli():
    spec = importlib.util.spec_from_file_location("classical_points_tool",
                                                  REPO / "tools" / "classical_points.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_cli_tunes_reuses_and_refuses_bad_input(atoms, tmp_path, capsys):
    main = _cli()
    train, test = (str(atoms / "annotations" / f"{s}.json") for s in ("train", "test"))
    first, second = tmp_path / "tuned", tmp_path / "reused"
    main(["--train", train, "--apply", test, "--output", str(first), "--quiet"])
    printed = capsys.readouterr().out
    assert "params: sigma=" in printed and "F1 " in printed and "wrote" in printed
    for name in ("params.json", "points.csv", "figures.json"):
        assert (first / name).is_file()
    main(["--params", str(first / "params.json"), "--apply", test, "--output", str(second)])
    assert (second / "points.csv").read_text() == (first / "points.csv").read_text()
    assert read_params_json(second / "params.json") == read_params_json(first / "params.json")

    def refused(args, *expected):
        with pytest.raises(SystemExit) as e:
            main(args)
        message = str(e.value.code)
        assert message.startswith("classical_points: ") and "\n" not in message
        for text in expected:
            assert text in message, (text, message)

    out = str(tmp_path / "bad")
    refused(["--train", train, "--params", str(first / "params.json"), "--apply", test,
             "--output", out], "exactly one of --train")
    missing = str(tmp_path / "nope.json")
    refused(["--train", missing, "--apply", test, "--output", out], missing, "does not exist")
    refused(["--params", missing, "--apply", test, "--output", out], missing)
    broken = tmp_path / "broken.json"
    broken.write_text('{"params": {"sigma": 2,}')
    refused(["--params", str(broken), "--apply", test, "--output", out], str(broken))
    broken.write_text('{"params": {"sigma": 2, "blur": 1}}')
    refused(["--params", str(broken), "--apply", test, "--output", out], str(broken), "blur")
    broken.write_text('{"images": [], "categories": [], "annotations": NaN}')
    refused(["--train", str(broken), "--apply", test, "--output", out], str(broken))
    refused(["--train", train, "--apply", test, "--output", str(first)], "already exist",
            "--overwrite")
    # a COCO file whose annotations have no point
    data = json.loads(Path(train).read_text())
    del data["annotations"][3]["point"]
    nopoint = atoms / "annotations" / "nopoint.json"
    nopoint.write_text(json.dumps(data))
    try:
        refused(["--train", str(nopoint), "--apply", test, "--output", out], str(nopoint),
                "annotations[3]", "'point'")
    finally:
        nopoint.unlink()
    refused(["--train", train, "--apply", test, "--output", out, "--images",
             str(tmp_path / "noimages")], "noimages", "--images")
    assert not Path(out).exists()
