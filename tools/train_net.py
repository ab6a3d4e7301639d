#!/usr/bin/env python
"""Train or evaluate a detectron2 model on EM data.

    python tools/train_net.py --config-file configs/quick_schedules/vesicles_mask_rcnn_instant_test.yaml
    python tools/train_net.py --config-file CFG --resume              # continue after an interrupt
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS out/model_final.pth
    python tools/train_net.py --config-file CFG --num-gpus 4          # same command, more GPUs

The console shows progress from the first iterations; the environment, the full config and the
model go to OUTPUT_DIR/log.txt (--verbose: also the console).
"""
import sys

import emdet  # noqa: F401  (makes detectron2 complete before it is imported)

# isort: split
from detectron2.engine import default_argument_parser, launch

from emdet.config import ConfigError
from emdet.data.datasets import DatasetFormatError
from emdet.engine import EMTrainer, setup_cfg
from emdet.engine.checkpoint import AtomicCheckpointer
from emdet.engine.weights import WeightsError


def setup(args):
    return setup_cfg(args)


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = EMTrainer.build_model(cfg)
        AtomicCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return EMTrainer.test(cfg, model)
    trainer = EMTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def build_parser():
    parser = default_argument_parser()
    parser.add_argument("--verbose", action="store_true",
                        help="also print the environment, the full config and the model on the "
                        "console (they always go to OUTPUT_DIR/log.txt)")
    return parser


if __name__ == "__main__":
    args = build_parser().parse_args()
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    except (DatasetFormatError, WeightsError) as e:
        sys.exit(f"error: {e}")
