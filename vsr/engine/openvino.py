"""OpenVINO as the CPU backend of plain networks (installed with vsr where OpenVINO ships wheels: x86-64
Linux and Windows, macOS; elsewhere ``pip install openvino`` where it can be had).

On the CPU, OpenVINO runs realesrgan-x4plus faster than PyTorch in both precisions (two runs of
benchmarks/bench_cpu_runtimes.py: 1.12-1.17x in bf16, 1.24-1.36x in fp32), so the engine uses it for
plain networks when it is installed (``--backend auto``). The network is converted from the PyTorch module
itself (no file is written) and compiled once per input shape: the tiles and frames of a video share one.
"""
from __future__ import annotations

import importlib.util
from collections import OrderedDict

import torch

from ..arch import Contract
from ..errors import VsrError

BACKENDS = ("auto", "torch", "openvino", "ncnn")
COMPILED_SHAPES = 8  # compiled networks kept (tiles, last tiles, flipped ones for an ensemble)
CONVERTED = 2  # converted networks kept, by their weights: fp32 and bf16 engines (and autotune's) share one
_converted: OrderedDict[str, object] = OrderedDict()


def available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def choose(name: str, *, device: torch.device, contract: Contract | str, traceable: bool = True,
           ncnn: bool = False) -> str:
    """``auto``: openvino for a plain, traceable network on the CPU where it is installed, else torch (the
    engine then measures which is fastest: vsr.engine.autotune). ``ncnn`` on the CPU for a network ncnn can
    run (``ncnn``: vsr.engine.ncnnrt.runnable)."""
    if name not in BACKENDS:
        raise VsrError(f"unknown backend {name!r}; use {', '.join(BACKENDS)}")
    if name == "torch":
        return name
    if name == "ncnn":
        from . import ncnnrt

        if not ncnnrt.available():
            raise VsrError("--backend ncnn needs the ncnn package: pip install ncnn pnnx")
        if not ncnn or device.type != "cpu":
            raise VsrError("--backend ncnn runs plain networks on the CPU (converted by pnnx where they do not "
                           "come as ncnn files); use --backend torch")
        return name
    usable = device.type == "cpu" and contract == Contract.PLAIN and traceable
    if name == "openvino":
        if not traceable:
            raise VsrError("--backend openvino cannot run this network (its graph depends on the input); "
                           "use --backend torch")
        if not usable:
            raise VsrError(f"--backend openvino runs plain networks on the CPU only (this is a {contract} "
                           f"network on {device.type}); use --backend torch")
        if not available():
            raise VsrError("--backend openvino needs OpenVINO: pip install openvino (where it has wheels), or use "
                           "--backend torch")
    return "openvino" if usable and available() else "torch"


class OpenVinoNet:
    """A plain network compiled by OpenVINO for the CPU, called like the module: ``net(x) -> y`` on
    (B, C, H, W) float tensors; ``dtype`` bf16 computes in bf16 (its INFERENCE_PRECISION_HINT); int8 is
    given a module whose convolutions are quantised (vsr.engine.quantize), and the rest computes in fp32."""

    def __init__(self, module: torch.nn.Module, *, in_ch: int, dtype: torch.dtype, threads: int,
                 weights: str | None = None) -> None:
        """``weights``: the module's weights hash (Upscaler.weights_sha256), under which its conversion
        (seconds for an RRDB) is kept for the next engine of the same network."""
        import openvino as ov

        self._model = _converted.get(weights) if weights else None
        if self._model is None:
            try:
                with torch.no_grad():
                    self._model = ov.convert_model(module.float().eval(), input=[ov.PartialShape([-1, in_ch, -1, -1])],
                                                   example_input=torch.rand(1, in_ch, 32, 32))
            except Exception as e:  # noqa: BLE001 - the converter's failures have many types
                raise VsrError(f"OpenVINO cannot convert this network ({' '.join(str(e).split())[:100]}); "
                               "use --backend torch") from None
            if weights:
                _converted[weights] = self._model
                while len(_converted) > CONVERTED:
                    _converted.popitem(last=False)
        self._core = ov.Core()
        self._config = {"INFERENCE_PRECISION_HINT": "bf16" if dtype == torch.bfloat16 else "f32",
                        "INFERENCE_NUM_THREADS": threads}
        self._requests: OrderedDict[tuple[int, ...], object] = OrderedDict()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape)
        request = self._requests.pop(shape, None)
        if request is None:
            model = self._model.clone()
            model.reshape(list(shape))
            request = self._core.compile_model(model, "CPU", self._config).create_infer_request()
        self._requests[shape] = request
        while len(self._requests) > COMPILED_SHAPES:
            self._requests.popitem(last=False)
        request.infer({0: x.float().contiguous().numpy()})
        return torch.from_numpy(request.get_output_tensor(0).data.copy())
