"""Evaluation: metrics that compare predictions with ground truth, as pandas tables."""

from emdet.evaluation.pixels import pixel_metrics  # noqa: F401
from emdet.evaluation.points import match_points, point_metrics  # noqa: F401
from emdet.evaluation.rotated import RotatedCOCOEvaluator, overlap_recall  # noqa: F401
