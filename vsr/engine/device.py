"""Device and precision choice."""
from __future__ import annotations

import torch

from ..errors import VsrError

# int8: convolutions in 8 bits through OpenVINO, for models trained for it (vsr.engine.quantize)
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.int8}


def select_device(name: str = "auto") -> torch.device:
    """cuda, then mps, then cpu; or the device the user names (``cuda:1`` etc.)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise VsrError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise VsrError(f"device {name} asked for but no CUDA GPU is available; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise VsrError(f"device {name} does not exist; this machine has {torch.cuda.device_count()} GPU(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise VsrError("device mps asked for but it is not available; use --device cpu")
    return dev


def select_precision(name: str, device: torch.device) -> torch.dtype:
    """``auto``: fp16 on GPUs; on the CPU bf16 where it computes bf16 natively (AVX-512 BF16 or AMX: about
    2x faster than fp32 there), otherwise fp32 (emulated bf16 is several times slower). Every architecture
    runs in each (a module that must keep parts in fp32 does so under autocast: ModelDescriptor.autocast)."""
    if name == "auto":
        if device.type in ("cuda", "mps"):
            return torch.float16
        if device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    if name not in PRECISIONS:
        raise VsrError(f"unknown precision {name!r}; use auto, fp32, bf16, fp16 or int8")
    if name == "int8" and device.type != "cpu":
        raise VsrError(f"--precision int8 runs on the CPU (through OpenVINO); on {device.type} use fp16 or auto")
    return PRECISIONS[name]


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX units (probes are private in torch; absent in some builds)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check is not None and check() for check in checks)
