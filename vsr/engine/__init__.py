"""Batched inference on a device: knows tensors and arrays, not files."""
from .device import PRECISIONS, select_device, select_precision
from .upscaler import EngineStats, Session, Upscaler

__all__ = ["Upscaler", "Session", "EngineStats", "select_device", "select_precision", "PRECISIONS"]
