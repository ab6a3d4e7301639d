"""ROI heads for rotated boxes (registered in ``ROI_HEADS_REGISTRY``)."""

from emdet.modeling.roi_heads.rotated_fast_rcnn import EMRotatedFastRCNNOutputLayers
from emdet.modeling.roi_heads.rotated_roi_heads import EMRROIHeads

__all__ = ["EMRROIHeads", "EMRotatedFastRCNNOutputLayers"]
