"""Rotated-box ops that detectron2 implements in C++, here in vectorised PyTorch (CPU and CUDA)."""
