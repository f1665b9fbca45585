"""Batched inference on a device: knows tensors and arrays, not files."""
from .device import PRECISIONS, select_device, select_precision
from .upscaler import EngineStats, Upscaler

__all__ = ["Upscaler", "EngineStats", "select_device", "select_precision", "PRECISIONS"]
