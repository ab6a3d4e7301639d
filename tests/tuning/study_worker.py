"""A study process for the tuning tests, on the fake trainer (``fake_train_net.py``).

    python study_worker.py study OUTPUT SPACE TRIALS SEED          # run_study in this process
    python study_worker.py write-outputs OUTPUT SPACE SECONDS GO   # write_outputs in a loop

``write-outputs`` waits until the file GO exists, then rewrites the outputs of the study in
OUTPUT for SECONDS seconds, so that two such processes write the same files at the same time.
"""
import sys
import time
from pathlib import Path

import emdet  # noqa: F401
from emdet.tuning import Detectron2Runner, TuneSettings, load_space, run_study

HERE = Path(__file__).resolve().parent
QUICK = HERE.parents[1] / "configs/quick_schedules/vesicles_mask_rcnn_instant_test.yaml"


def settings(output: Path, space: Path, trials: int, seed: int = 0) -> TuneSettings:
    runner = Detectron2Runner(str(QUICK), script=HERE / "fake_train_net.py")
    return TuneSettings(runner=runner, space=load_space(space), trials=trials, output=output,
                        metric="bbox/AP", seed=seed)


def main(argv: list[str]) -> None:
    mode, output, space = argv[0], Path(argv[1]), Path(argv[2])
    if mode == "study":
        run_study(settings(output, space, int(argv[3]), int(argv[4])), progress=False)
        return
    import optuna

    from emdet.tuning.search import write_outputs

    s = settings(output, space, 1)
    study = optuna.load_study(study_name=s.study_name(), storage=s.storage_url())
    go = Path(argv[4])
    while not go.exists():
        time.sleep(0.01)
    end = time.monotonic() + float(argv[3])
    while time.monotonic() < end:
        write_outputs(study, s, "bbox/AP")


if __name__ == "__main__":
    main(sys.argv[1:])
