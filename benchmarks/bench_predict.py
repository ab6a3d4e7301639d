"""Prediction throughput and memory: emdet's predict against detectron2's DefaultPredictor.

Model: the quick Mask R-CNN R-18-FPN config with seeded random weights and detectron2's default
score threshold (0.05), so every tile yields the full ``TEST.DETECTIONS_PER_IMAGE`` (100)
detections: the worst case for merging, mask encoding and memory. Images: synthetic vesicle
micrographs (uint16); the 4096 px image is an 8 x 8 mosaic of 512 px ones. Tiles and whole
images are run at their own pixel scale (``INPUT.MIN_SIZE_TEST`` = tile or image size).

Cases
-----
``batch512``
    emdet: ``predict_batch`` over N files of 512 x 512 px, the whole tool (read, predict, RLE,
    overlays, parts, predictions.json). Baseline: a loop of ``load_for_detectron2`` +
    ``DefaultPredictor`` on the same files (no output written). images/s, higher is better.
``big``
    emdet: ``EMPredictor`` with 512 px tiles (128 px overlap) on one 4096 x 4096 image, masks
    merged across seams and RLE-encoded. Baseline: ``DefaultPredictor`` on the whole image
    untiled at full resolution (``MIN_SIZE_TEST = MAX_SIZE_TEST = 4096``; it fits in memory on
    this machine, pasting 100 full-size masks). With ``--quick``: a 2048 px image.
``frame2k`` (CUDA only)
    seconds per 2048 x 2048 frame on the GPU, tiled, batches of 8 tiles; Lin et al. report
    0.027 s per instance and call 5 s per frame real time.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from _common import devices, peak_memory_mb, row

NAME = "predict"
REPO = Path(__file__).resolve().parents[1]
QUICK_CONFIG = REPO / "configs/quick_schedules/vesicles_mask_rcnn_instant_test.yaml"


def _size(case: str, quick: bool) -> int:
    return {"batch512": 512, "big": 2048 if quick else 4096, "frame2k": 2048}[case]


def _n_files(quick: bool) -> int:
    return 4 if quick else 8


def _cfg(device: str, size: int):
    import emdet  # noqa: F401
    from emdet.config import load_config

    return load_config(QUICK_CONFIG, [
        "MODEL.DEVICE", device, "INPUT.MIN_SIZE_TEST", str(size),
        "INPUT.MAX_SIZE_TEST", str(size), "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.05",
    ])


def _weights(folder: Path) -> Path:
    import torch
    from detectron2.modeling import build_model

    path = folder / "random_quick.pth"
    if not path.is_file():
        torch.manual_seed(0)
        model = build_model(_cfg("cpu", 512))
        torch.save({"model": model.state_dict()}, path)
    return path


def _image(size: int) -> np.ndarray:
    from emdet.data.synthetic import generate_image

    base = generate_image("vesicles", 0, 0, 512).image
    reps = max(1, size // 512)
    return np.tile(base, (reps, reps))[:size, :size]


def _files(folder: Path, n: int) -> Path:
    from emdet.data.io import write_tiff
    from emdet.data.synthetic import generate_image

    images = folder / "images"
    if not images.is_dir():
        images.mkdir()
        for k in range(n):
            write_tiff(images / f"v{k:03d}.tif", generate_image("vesicles", 1, k, 512).image,
                       pixel_size=2.0)
    return images


def make_case(case: str, quick: bool, device: str, *, baseline: bool = False):
    """The call of one case (emdet's, or the baseline's), inputs ready."""
    import torch  # noqa: F401

    import emdet  # noqa: F401

    tmp = Path(tempfile.mkdtemp(prefix="emdet-bench-"))
    size = _size(case, quick)
    cfg = _cfg(device, size if case == "batch512" or baseline else 512)
    cfg.defrost()
    cfg.MODEL.WEIGHTS = str(_weights(tmp))
    cfg.freeze()
    if case == "batch512":
        folder = _files(tmp, _n_files(quick))
        if baseline:
            from detectron2.engine import DefaultPredictor

            from emdet.data.io import list_images, load_for_detectron2

            predictor = DefaultPredictor(cfg)
            files = list_images(folder)

            def run_baseline():
                for f in files:
                    predictor(load_for_detectron2(f))

            return run_baseline
        from emdet.inference import EMPredictor, PredictOptions, predict_batch

        predictor = EMPredictor(cfg, tile=0)
        counter = iter(range(10**6))

        def run_emdet():
            out = tmp / f"out{next(counter)}"
            predict_batch(folder, out, cfg, PredictOptions(tile=0, progress=False),
                          predictor=predictor)

        return run_emdet
    image = _image(size)
    if baseline:
        from detectron2.engine import DefaultPredictor

        from emdet.inference.predictor import prepare_image

        predictor = DefaultPredictor(cfg)
        rgb = np.repeat(prepare_image(image, cfg)[..., None], 3, axis=2)
        return lambda: predictor(rgb)
    from emdet.inference import EMPredictor, detections_to_annotations

    predictor = EMPredictor(cfg, tile=512, overlap=128, batch_size=8 if device == "cuda" else 1)

    def run_emdet():
        det = predictor(image)
        return detections_to_annotations(det, size, size, [1, 2, 3])

    return run_emdet


def _timed(fn) -> tuple[float, object]:
    """Wall time of one call (CUDA work included) and its result."""
    import torch

    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def _mem(case: str, quick: bool, device: str, baseline: bool) -> float | None:
    """Peak memory of one call, in a fresh process (see _common.peak_memory_mb)."""
    if baseline:
        # peak_memory_mb calls make_case(case, quick, device); route the baseline through a
        # tiny shim module.
        shim = Path(tempfile.mkdtemp(prefix="emdet-bench-")) / "baseline_shim.py"
        shim.write_text(
            "import importlib.util\n"
            f"spec = importlib.util.spec_from_file_location('bp', {__file__!r})\n"
            "bp = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(bp)\n"
            "def make_case(case, quick, device):\n"
            "    return bp.make_case(case, quick, device, baseline=True)\n"
        )
        return peak_memory_mb(str(shim), case, quick=quick, device=device)
    return peak_memory_mb(__file__, case, quick=quick, device=device)


def run(quick: bool = False) -> list[dict]:
    """images/s of emdet and DefaultPredictor, peak memory of both (emdet's in the column)."""
    rows = []
    n = _n_files(quick)
    # Many small files: the whole tool against a bare DefaultPredictor loop.
    emdet_fn = make_case("batch512", quick, "cpu")
    base_fn = make_case("batch512", quick, "cpu", baseline=True)
    emdet_fn(), base_fn()  # warm-up (first forward passes allocate)
    t_emdet = min(_timed(emdet_fn)[0] for _ in range(1 if quick else 2))
    t_base = min(_timed(base_fn)[0] for _ in range(1 if quick else 2))
    mem = _mem("batch512", quick, "cpu", False)
    mem_base = _mem("batch512", quick, "cpu", True)
    rows.append(row(
        NAME, f"batch512: {n} files of 512x512, whole tool vs DefaultPredictor loop",
        n / t_emdet, "images/s", baseline=n / t_base, peak_mem_mb=mem, device="cpu",
        note=f"DefaultPredictor loop peak {mem_base:.0f} MB; emdet includes reading, RLE, "
        "overlays, parts and predictions.json" if mem_base is not None else "",
    ))

    size = _size("big", quick)
    emdet_fn = make_case("big", quick, "cpu")
    base_fn = make_case("big", quick, "cpu", baseline=True)
    t_emdet, anns = _timed(emdet_fn)
    t_base, out = _timed(base_fn)
    mem = _mem("big", quick, "cpu", False)
    mem_base = _mem("big", quick, "cpu", True)
    from emdet.data.tiling import tile_starts

    n_tiles = len(tile_starts(size, 512, 128)) ** 2
    rows.append(row(
        NAME, f"big: {size}x{size}, {n_tiles} tiles of 512 vs DefaultPredictor untiled",
        1 / t_emdet, "images/s", baseline=1 / t_base, peak_mem_mb=mem, device="cpu",
        note=f"{t_emdet:.1f} s vs {t_base:.1f} s per image; {len(anns)} objects kept vs "
        f"{len(out['instances'])} (DETECTIONS_PER_IMAGE caps the untiled run); DefaultPredictor "
        f"peak {mem_base:.0f} MB" if mem_base is not None else "",
    ))

    if "cuda" in devices():
        import torch

        fn = make_case("frame2k", quick, "cuda")
        fn()
        times = [_timed(fn)[0] for _ in range(3 if quick else 10)]
        t = float(np.median(times))
        anns = fn()
        rows.append(row(
            NAME, "frame2k: 2048x2048 frame, 512 tiles, batch 8 (GPU latency)", t, "s/frame",
            baseline=5.0, higher_is_better=False,
            peak_mem_mb=_mem("frame2k", quick, "cuda", False), device="cuda",
            note=f"{torch.cuda.get_device_name()}; baseline: Lin et al.'s 5 s per frame (real "
            f"time); {len(anns)} objects, {t / max(1, len(anns)):.4f} s per instance (Lin et "
            "al.: 0.027)",
        ))
    return rows

