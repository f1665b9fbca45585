"""Validation on held-out frames (PSNR/SSIM on Y, sample grids; for a flow also the likelihood of the
held-out pairs and how Gaussian their latents are; for moving clips also tOF and the warping error) and
the run's logs (TensorBoard and a JSON-lines file that benchmarks read back as the quality-against-time
curve)."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import torch
from torch import nn

from .. import metrics
from ..arch import Contract, ModelDescriptor
from ..images import write_image


@contextlib.contextmanager
def _left_as_is(model: nn.Module) -> Iterator[None]:
    """The engine sets its network to eval mode (and its own memory layout): the training module
    gets its mode and layout back afterwards."""
    was_training = model.training
    conv = next((p for p in model.parameters() if p.ndim == 4), None)
    channels_last = conv is not None and conv.is_contiguous(memory_format=torch.channels_last)
    try:
        yield
    finally:
        model.train(was_training)
        if conv is not None and conv.is_contiguous(memory_format=torch.channels_last) != channels_last:
            model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def validate(model: nn.Module, val: list[tuple[str, np.ndarray, np.ndarray]], *, arch: str,
             params: dict[str, Any], device: torch.device, scale: int, precision: str = "auto",
             quant: int = 0, seed: int = 0) -> tuple[dict[str, float], list[np.ndarray]]:
    """Mean PSNR-Y / SSIM-Y (border = scale) of the model's outputs on the validation set, and the
    outputs. They come from the engine that ``vsr upscale`` runs (its precision choice, tiling and
    8-bit rounding; a sampled network at its default temperature, 0: the mean image), so the numbers a
    run reports are those its model gives in use. A flow also reports :func:`likelihood` (dequantised
    with ``quant`` levels, noise drawn from ``seed``)."""
    from .. import arch as archs
    from ..engine import Upscaler

    if not val:
        return {}, []
    desc = archs.get_arch(arch).describe(params, model)
    if val[0][1].ndim == 4:  # moving clips (T, h, w, 3)
        return validate_clips(desc, val, device=device, scale=scale, precision=precision)
    with _left_as_is(model):
        up = Upscaler(desc, device=str(device), precision=precision, tile="auto", backend="torch")
        outs = [up.upscale_array(lq[None])[0] for _, lq, _ in val]
        flow = likelihood(model, val, size_multiple=desc.size_multiple, scale=scale, device=device,
                          quant=quant, seed=seed) if desc.contract == Contract.SAMPLED else {}
    p = [metrics.psnr(out, hq, border=scale) for out, (_, _, hq) in zip(outs, val)]
    s = [metrics.ssim(out, hq, border=scale) for out, (_, _, hq) in zip(outs, val)]
    return {"psnr_y": float(np.mean(p)), "ssim_y": float(np.mean(s)), **flow}, outs


def validate_clips(desc: ModelDescriptor, val: list[tuple[str, np.ndarray, np.ndarray]], *, device: torch.device,
                    scale: int, precision: str) -> tuple[dict[str, float], list[np.ndarray]]:
    """Each clip through one engine session, frame after frame (a recurrent model carries its state from
    the first frame on, as in ``vsr upscale``): PSNR-Y / SSIM-Y over every frame, TecoGAN's tOF against
    the ground truth's motion, and the warping error of the output (motion from the ground truth), each
    the mean over the clips; the outputs (T, sh, sw, 3) per clip."""
    from ..engine import Upscaler

    with _left_as_is(desc.model):
        up = Upscaler(desc, device=str(device), precision=precision, tile="auto", backend="torch")
        outs = [up.session().upscale_array(lq, indices=list(range(len(lq))),
                                           resets=[True] + [False] * (len(lq) - 1)) for _, lq, _ in val]
    return clip_scores(outs, val, scale=scale), outs


def clip_scores(outs: list[np.ndarray], val: list[tuple[str, np.ndarray, np.ndarray]], *,
                scale: int) -> dict[str, float]:
    """PSNR-Y / SSIM-Y over every frame, and tOF and the warping error per clip, each the mean; ``outs``
    (T, sh, sw, 3) per clip of ``val``."""
    p = [metrics.psnr(o, t, border=scale) for out, (_, _, hq) in zip(outs, val) for o, t in zip(out, hq)]
    s = [metrics.ssim(o, t, border=scale) for out, (_, _, hq) in zip(outs, val) for o, t in zip(out, hq)]
    tof = [metrics.tof(list(out), list(hq)) for out, (_, _, hq) in zip(outs, val)]
    warp = [metrics.warping_error(list(out), guide=list(hq)) for out, (_, _, hq) in zip(outs, val)]
    return {"psnr_y": float(np.mean(p)), "ssim_y": float(np.mean(s)), "tof": float(np.mean(tof)),
            "warping_error": float(np.nanmean(warp)) if not np.isnan(warp).all() else float("nan")}


@torch.no_grad()
def likelihood(flow: nn.Module, val: list[tuple[str, np.ndarray, np.ndarray]], *, size_multiple: int,
               scale: int, device: torch.device, quant: int, seed: int) -> dict[str, float]:
    """A conditional flow (``flow(hr, lr, quant=...) -> (latents, nll)``) on the held-out pairs, in fp32
    and eval mode: ``nll`` (bits per HR pixel, the training loss's unit, mean over the images), and the
    mean and std of the top latent over all of them (0 and 1 for latents that are N(0, 1)). The
    dequantisation noise comes from ``seed``; the global random state is left as it was."""
    def tensor(img: np.ndarray) -> torch.Tensor:  # (h, w, 3) uint8 -> (1, 3, h, w) in [0, 1]
        return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().div(255).to(device)

    nlls, tops = [], []
    flow.eval()
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for _, lq, hq in val:
            m = size_multiple  # the flow's input size multiple: crop the pair to it
            h, w = lq.shape[0] // m * m, lq.shape[1] // m * m
            latents, nll = flow(tensor(hq[:h * scale, :w * scale]), tensor(lq[:h, :w]), quant=quant)
            nlls.append(float(nll.mean()))
            tops.append(latents[0].double().flatten())  # the top z, (C * h' * w',)
    z = torch.cat(tops)
    return {"nll": float(np.mean(nlls)), "z_mean": float(z.mean()), "z_std": float(z.std(correction=0))}


def bicubic(lq: np.ndarray, scale: int) -> np.ndarray:
    return cv2.resize(lq, (lq.shape[1] * scale, lq.shape[0] * scale), interpolation=cv2.INTER_CUBIC)


class Logger:
    """TensorBoard scalars/images (when enabled) and ``metrics.jsonl`` in the run folder."""

    def __init__(self, folder: Path, *, enabled: bool) -> None:
        self.folder = folder
        self.enabled = enabled
        self.writer = None
        if enabled:
            folder.mkdir(parents=True, exist_ok=True)
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(folder / "tensorboard"))

    def _line(self, record: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def scalars(self, record: dict[str, float], step: int) -> None:
        self._line({"step": step, **record})
        if self.writer:
            for k, v in record.items():
                self.writer.add_scalar(f"loss/{k}" if "/" in k else k, v, step)

    def validation(self, m: dict[str, float], step: int, seconds: float, sample: np.ndarray | None,
                   val: list[tuple[str, np.ndarray, np.ndarray]], *, grids: bool, scale: int) -> None:
        """``sample``: the model's output on the first validation image."""
        self._line({"step": step, "seconds": seconds, **{f"val/{k}": v for k, v in m.items()}})
        if self.writer:
            for k, v in m.items():
                self.writer.add_scalar(f"val/{k}", v, step)
        if grids and val and sample is not None:
            name, lq, hq = val[0]
            if sample.ndim == 4:  # a clip: its last frame, where the state has built up longest
                sample, lq, hq = sample[-1], lq[-1], hq[-1]
            grid = np.concatenate([bicubic(lq, scale), sample, hq], axis=1)  # LQ | output | ground truth
            (self.folder / "samples").mkdir(parents=True, exist_ok=True)
            write_image(self.folder / "samples" / f"step-{step:08d}.png", grid)
            if self.writer:
                self.writer.add_image("val/sample", grid, step, dataformats="HWC")

    def close(self) -> None:
        if self.writer:
            self.writer.close()
