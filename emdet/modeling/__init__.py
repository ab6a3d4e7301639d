"""emdet's detectron2 model components; importing this package registers them.

* ``MODEL.ROI_HEADS.NAME: EMRROIHeads``: rotated Fast R-CNN head (``ROIAlignRotated`` pooling,
  ``(cx, cy, w, h, angle)`` regression with periodic angles, rotated NMS);
* ``MODEL.PROPOSAL_GENERATOR.NAME: EMRRPN`` (rotated anchors) or ``HRPN`` (axis-aligned
  anchors, angle-0 rotated proposals);
* :class:`PeriodicBox2BoxTransformRotated`: the box regression both use.

See ``configs/nanorods/`` for complete models.
"""

import emdet  # noqa: F401  (makes detectron2 complete before its modeling package is used)
from emdet.modeling.box_regression import PeriodicBox2BoxTransformRotated
from emdet.modeling.proposal_generator import EMRRPN, HRPN
from emdet.modeling.roi_heads import EMRotatedFastRCNNOutputLayers, EMRROIHeads

__all__ = [
    "EMRRPN",
    "HRPN",
    "EMRROIHeads",
    "EMRotatedFastRCNNOutputLayers",
    "PeriodicBox2BoxTransformRotated",
]
