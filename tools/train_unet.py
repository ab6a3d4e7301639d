#!/usr/bin/env python
"""Train a U-Net on an EM data set folder: segmentation masks or point heatmaps.

    python tools/train_unet.py --config-file configs/unet/graphene_contamination.yaml
    python tools/train_unet.py --config-file configs/unet/merons_heatmap.yaml --folds 5 --repeats 2
    python tools/train_unet.py --config-file CFG --resume OUTPUT_DIR output/unet/run1

Adam, pixel-wise (optionally spatially weighted) cross-entropy, random quarter turns and
reflections; k-fold cross-validation reports mean and spread of every metric. Checkpoints are
written atomically and ``--resume`` continues from the last one. All logic is in
:mod:`emdet.dense.train`.
"""

from emdet.dense.train import main

if __name__ == "__main__":
    main()
