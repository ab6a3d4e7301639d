"""Utilities shared by tools and reports: drawing predictions on EM images."""

from emdet.utils.visualize import draw_instances, draw_rotated_boxes, to_rgb

__all__ = ["draw_instances", "draw_rotated_boxes", "to_rgb"]
