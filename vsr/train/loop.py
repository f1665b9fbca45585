"""The training loop: ``train`` reads top to bottom, each of its steps a named function below.

Build (data, networks, optimizers: :func:`_build`), resume (:func:`_restore`), then per step: fetch the
micro-batches (a pure function of the step), run each training step of the recipe in order (e.g.
generator, then discriminator: :func:`_train_step`): accumulate its losses over the micro-batches, guard
against non-finite values, clip, update, and refresh the EMA copy; log, validate and checkpoint.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .. import arch
from ..arch import Contract
from ..engine import device as devices
from ..engine import quantize
from ..engine.device import select_device
from ..errors import VsrError
from . import checkpoint as ckpt
from . import ddp, loss_types, losses, temporal
from .clipdata import ClipData, validation_clips
from .config import LossConfig, RecipeConfig, ScheduleConfig, TrainStepConfig, to_dict
from .data import TrainData, load_frames, validation_set
from .evaluate import Logger, validate
from .nets import DISCRIMINATORS, EMA, build_network, export, freeze_encoders, initialize_from_data


CALIBRATION_BATCHES = 32  # batches whose inputs set a quantised network's starting ranges


@dataclass
class RunResult:
    output: Path
    step: int  # steps done in total
    seconds: float  # training time in total (over all resumed parts)
    losses: list[dict[str, float]] = field(default_factory=list)  # per step of this part
    metrics: dict[str, float] = field(default_factory=dict)  # last validation
    card: Path | None = None


def lr_factor(step: int, s: ScheduleConfig, total: int) -> float:
    """The learning-rate multiplier: a pure function of the step."""
    if step < s.warmup:
        return (step + 1) / s.warmup
    if s.type == "cosine":
        t = (step - s.warmup) / max(1, total - s.warmup)
        return s.min_factor + (1 - s.min_factor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    if s.type == "step":
        return s.gamma ** sum(step >= m for m in s.milestones)
    return 1.0


def loss_active(loss: LossConfig, step: int) -> bool:
    return step >= loss.start and (loss.stop is None or step < loss.stop)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None = fp32. auto: fp16 on CUDA (with a grad scaler), bf16 on CPUs with native bf16."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if device.type == "cpu" and devices.cpu_has_native_bf16() else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _check_generator(cfg: RecipeConfig, gen: torch.nn.Module, params: dict[str, Any]) -> None:
    """The data are made at the recipe's scale: the generator must upscale by as much. A flow (the
    sampled contract: SRFlow) trains with its likelihood and pixel losses on its temperature-0 image;
    the nll loss needs one."""
    net_cfg = cfg.networks[cfg.generator]
    if net_cfg.arch in DISCRIMINATORS:
        raise VsrError(f"networks.{cfg.generator}: the generator cannot be a {net_cfg.arch}")
    desc = arch.get_arch(net_cfg.arch).describe(params, gen)
    if desc.contract == Contract.RECURRENT and cfg.data.clips is None:
        raise VsrError(f"data.clips: a {net_cfg.arch} generator learns from its previous output; train it "
                       "on clips (e.g. clips: {frames: 5})")
    if desc.contract == Contract.SAMPLED and cfg.data.clips is not None:
        raise VsrError(f"data.clips: a {net_cfg.arch} generator samples each frame on its own; "
                       "train it on patches (remove data.clips)")
    loss_types.check_generator(cfg, arch=net_cfg.arch, contract=desc.contract)
    scale = desc.scale
    if abs(scale - cfg.scale) > 1e-6:
        what = net_cfg.weights or f"{net_cfg.arch} with params {net_cfg.params}"
        raise VsrError(f"scale: the recipe trains at x{cfg.scale}, but its generator ({what}) is x{scale:g}; "
                       f"set scale: {scale:g} or another generator")


@dataclass
class Parts:
    """What a run trains: networks (with constructor arguments), EMA copies, one optimizer per training step,
    the loss scaler, the losses' fixed networks, and the networks as the steps call them (``wrapped``)."""
    nets: dict[str, torch.nn.Module]
    params: dict[str, dict[str, Any]]
    emas: dict[str, EMA]
    opts: list[torch.optim.Optimizer]
    scaler: torch.amp.GradScaler | None
    fixed: dict[str, torch.nn.Module]
    wrapped: dict[str, torch.nn.Module] = field(default_factory=dict)

    def generator(self, cfg: RecipeConfig) -> torch.nn.Module:
        """What is validated and shipped: the EMA copy where there is one."""
        return self.emas[cfg.generator].model if cfg.generator in self.emas else self.nets[cfg.generator]


def train(cfg: RecipeConfig, *, resume: bool = False, stop_after: int | None = None, progress: bool = True,
          export_name: str | None = None, export_dir: Path | None = None) -> RunResult:
    """Train (or continue training) from a recipe; ``stop_after`` ends this part after that step
    (a checkpoint is written), as an interruption would."""
    loss_types.check(cfg)
    device = select_device(cfg.device)
    dist = ddp.setup(device.type)
    out_dir = Path(cfg.output or Path("runs") / cfg.name).expanduser()
    ckpt_dir = out_dir / "checkpoints"
    state = ckpt.load(ckpt_dir) if resume else None  # a missing checkpoint fails before the data loads
    if not resume and (ckpt_dir / ckpt.LATEST).is_file():
        raise VsrError(f"{out_dir} already holds a run; continue it with --resume or set another output")
    data, val = _data(cfg)
    amp = autocast_dtype(cfg.precision, device)
    torch.manual_seed(cfg.seed)
    parts = _build(cfg, data, device, amp, fresh=state is None)
    start, seconds = _restore(cfg, parts, state, dist) if state is not None else (0, 0.0)
    freeze_encoders(parts.nets, cfg.networks, start)  # training stage 2: SRFlow's encoder frozen
    parts.wrapped = _wrap(cfg, parts, dist, device)
    log = Logger(out_dir, enabled=dist.main and cfg.log.tensorboard)
    result = RunResult(output=out_dir, step=start, seconds=seconds)
    end = cfg.total_steps if stop_after is None else min(cfg.total_steps, stop_after)
    bar = tqdm(range(start, end), initial=start, total=cfg.total_steps, disable=not (progress and dist.main),
               desc=cfg.name, dynamic_ncols=True)
    last_ckpt, streak = time.monotonic(), 0

    def validation(done: int) -> None:
        result.metrics, outs = validate(parts.generator(cfg), val, arch=cfg.networks[cfg.generator].arch,
                                        params=parts.params[cfg.generator], device=device, scale=cfg.scale,
                                        quant=_quant(cfg), seed=cfg.eval.seed)
        if dist.main:
            log.validation(result.metrics, done, seconds, outs[0], val, grids=cfg.eval.grids, scale=cfg.scale)

    if val and cfg.eval.at_start and start == 0:
        validation(0)
    for step in bar:
        t0 = time.monotonic()
        for n in freeze_encoders(parts.nets, cfg.networks, step):  # stage 3: the encoder trains from here on
            parts.wrapped[n] = ddp.wrap(parts.nets[n], dist, device)  # DDP syncs the parameters that train now
        record, skipped = _train_step(cfg, parts, _micro_batches(cfg, data, step, dist, device), step, dist, amp)
        streak = streak + 1 if skipped else 0
        if streak >= cfg.max_nonfinite:
            raise VsrError(f"stopped at step {step}: the loss was not finite {streak} steps in a row; "
                           "lower the learning rate or use precision fp32")
        seconds += time.monotonic() - t0
        done = step + 1
        record["seconds"] = seconds
        result.losses.append(record)
        result.step, result.seconds = done, seconds
        if progress and dist.main and record:
            bar.set_postfix({k.split("/")[-1]: f"{v:.4g}" for k, v in record.items() if k.endswith("total")})
        if dist.main and (done % cfg.log.every == 0 or done == end):
            log.scalars(record, done)
        if val and (cfg.eval.every and done % cfg.eval.every == 0 or done == cfg.total_steps):
            validation(done)
        minutes = (time.monotonic() - last_ckpt) / 60
        due = (cfg.log.checkpoint_every and done % cfg.log.checkpoint_every == 0
               or cfg.log.checkpoint_minutes and minutes >= cfg.log.checkpoint_minutes or done == end)
        if due and dist.main:
            ckpt.save(ckpt_dir, _checkpoint(cfg, parts, done, seconds), step=done, keep=cfg.log.keep)
        if due:
            last_ckpt = time.monotonic()
    bar.close()
    log.close()
    if result.step >= cfg.total_steps and dist.main and export_name:
        result.card = export(parts.generator(cfg), parts.params[cfg.generator], cfg, name=export_name,
                             folder=export_dir or out_dir, steps=result.step, seconds=seconds, metrics=result.metrics)
    ddp.barrier(dist)
    ddp.cleanup(dist)
    return result


def _data(cfg: RecipeConfig) -> tuple[TrainData | ClipData, Any]:
    """The training data (patches or clips, a pure function of the step) and the validation set."""
    train_frames, held = load_frames(cfg.data, scale=cfg.scale)
    if cfg.data.clips is not None:
        data: TrainData | ClipData = ClipData(frames=train_frames, cfg=cfg.data, scale=cfg.scale, seed=cfg.seed)
        return data, validation_clips(held, cfg=cfg.data, ev=cfg.eval, scale=cfg.scale)
    data = TrainData(frames=train_frames, cfg=cfg.data, scale=cfg.scale, seed=cfg.seed)
    return data, validation_set(held, cfg=cfg.data, ev=cfg.eval, scale=cfg.scale)


def _build(cfg: RecipeConfig, data: TrainData | ClipData, device: torch.device, amp: torch.dtype | None, *,
           fresh: bool) -> Parts:
    """The networks, checked against the recipe, and what trains them; a fresh run initialises the
    generator from its first batch."""
    nets, params = {}, {}
    for name, net_cfg in cfg.networks.items():
        nets[name], params[name] = build_network(name, net_cfg)
        nets[name].to(device, memory_format=torch.channels_last)
    _check_generator(cfg, nets[cfg.generator], params[cfg.generator])
    if fresh:  # data-dependent initialisation (SRFlow's ActNorms) on the first batch, before any update
        first = {k: v.to(device) for k, v in data.batch(0, range(cfg.data.batch)).items()}
        initialize_from_data(nets[cfg.generator], first, quant=_quant(cfg))
    for name, net_cfg in cfg.networks.items():
        if net_cfg.quantize:  # the input ranges: calibrated on a fresh run's first batches, else from the checkpoint
            if cfg.data.clips is not None:
                raise VsrError(f"networks.{name}.quantize: int8 trains on patches (remove data.clips)")
            if fresh:
                found = quantize.calibrate(nets[name], (data.batch(i, range(cfg.data.batch))["lq"].to(device)
                                                        for i in range(CALIBRATION_BATCHES)))
            else:
                found = [(1.0, 0.0)] * len(quantize.convolutions(nets[name]))
            quantize.wrap(nets[name], found, learn=True)
    emas = {n: EMA(model=nets[n], decay=c.ema) for n, c in cfg.networks.items() if c.ema > 0}
    opts = [_optimizer(ts, nets[ts.network]) for ts in cfg.steps]
    scaler = grad_scaler(amp, device)
    fixed = loss_types.prepare(cfg, device)  # VGG features, teachers
    return Parts(nets=nets, params=params, emas=emas, opts=opts, scaler=scaler, fixed=fixed)


def _restore(cfg: RecipeConfig, parts: Parts, state: dict[str, Any], dist: ddp.Dist) -> tuple[int, float]:
    """A checkpoint's weights, optimizer and scaler states and random state; (steps done, seconds)."""
    for n, sd in state["networks"].items():
        parts.nets[n].load_state_dict(sd)
    for n, sd in state["ema"].items():
        parts.emas[n].model.load_state_dict(sd)
    for o, sd in zip(parts.opts, state["optimizers"]):
        mults = [g["lr_mult"] for g in o.param_groups]
        o.load_state_dict(sd)
        for g, m in zip(o.param_groups, mults):  # the recipe's (a checkpoint may predate them)
            g["lr_mult"] = m
    if parts.scaler is not None and state.get("scaler"):
        parts.scaler.load_state_dict(state["scaler"])
    ckpt.set_rng_state(state["rng"])
    if dist.main and state["config"] != to_dict(cfg):
        print("vsr: the recipe differs from the checkpoint's; continuing with the recipe", file=sys.stderr)
    return int(state["step"]), float(state["seconds"])


def _wrap(cfg: RecipeConfig, parts: Parts, dist: ddp.Dist, device: torch.device) -> dict[str, torch.nn.Module]:
    """The networks as the training steps call them."""
    trained = dict(parts.nets)
    if cfg.data.clips is not None:  # the generator runs over whole clips, one call per clip (for DDP)
        contract = arch.get_arch(cfg.networks[cfg.generator].arch).describe(
            parts.params[cfg.generator], parts.nets[cfg.generator]).contract
        trained[cfg.generator] = temporal.ClipRunner(net=parts.nets[cfg.generator],
                                                     recurrent=contract == Contract.RECURRENT)
    return {n: ddp.wrap(m, dist, device) for n, m in trained.items()}


def _micro_batches(cfg: RecipeConfig, data: TrainData | ClipData, step: int, dist: ddp.Dist,
                   device: torch.device) -> list[dict[str, torch.Tensor]]:
    """The step's micro-batches on the device: sample k*B*world + rank*B + j, so that N processes
    together see one process's batch."""
    A, B = cfg.data.accumulate, cfg.data.batch
    return [{k: v.to(device) for k, v in data.batch(step, range((m * dist.world + dist.rank) * B,
                                                               (m * dist.world + dist.rank + 1) * B)).items()}
            for m in range(A)]


def _train_step(cfg: RecipeConfig, parts: Parts, micro: list[dict[str, torch.Tensor]], step: int, dist: ddp.Dist,
                amp: torch.dtype | None) -> tuple[dict[str, float], bool]:
    """Each training step of the recipe in order (e.g. generator, then discriminator) on this step's
    micro-batches: (the mean losses, by "network/loss"; whether a step was skipped for non-finite losses)."""
    record: dict[str, float] = {}
    fakes: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    skipped = False
    for i, ts in enumerate(cfg.steps):
        active = [n for n in ts.losses if loss_active(cfg.losses[n], step)]
        if step < ts.start or (step - ts.start) % ts.every or not active:
            continue
        opt = parts.opts[i]
        for g in opt.param_groups:
            g["lr"] = ts.optimizer.lr * g["lr_mult"] * lr_factor(step, ts.schedule, cfg.total_steps)
        opt.zero_grad(set_to_none=True)
        names, means = _accumulate(cfg, parts, ts, active, micro, fakes, step, dist, amp)
        if not all(map(math.isfinite, means)):
            skipped = True
            opt.zero_grad(set_to_none=True)
            if parts.scaler:  # what a step with inf gradients does: no update, a smaller loss scale (a plain
                # update() raises when no step was recorded)
                parts.scaler.update(parts.scaler.get_scale() * parts.scaler.get_backoff_factor())
            continue
        _update(parts, ts, opt)
        record.update({f"{ts.network}/{n}": v for n, v in zip(names, means)})
    return record, skipped


def _accumulate(cfg: RecipeConfig, parts: Parts, ts: TrainStepConfig, active: list[str],
                micro: list[dict[str, torch.Tensor]], fakes: dict[int, tuple[torch.Tensor, torch.Tensor]],
                step: int, dist: ddp.Dist, amp: torch.dtype | None) -> tuple[list[str], list[float]]:
    """Gradients of one training step's losses over the micro-batches; (the terms' names and "total",
    their means over micro-batches and processes)."""
    A, net = len(micro), parts.wrapped[ts.network]
    device = micro[0]["lq"].device
    acc_dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
    names: list[str] = []
    sums = torch.zeros(0, dtype=acc_dtype, device=device)
    for m, mb in enumerate(micro):
        sync = contextlib.nullcontext() if m == A - 1 or not dist.enabled else net.no_sync()
        with sync:
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                terms = _terms(cfg, ts, active, net, parts.wrapped, mb, m, fakes, parts.fixed, step, dist)
            total = sum(terms.values()) / A
            (parts.scaler.scale(total) if parts.scaler else total).backward()
        names = list(terms) + ["total"]
        # stays on the device: one read-back per training step, not one per term and micro-batch
        values = torch.stack([t.detach().to(acc_dtype) for t in terms.values()] + [total.detach().to(acc_dtype) * A])
        sums = values if m == 0 else sums + values
    # the mean over processes is not finite if any process's losses were not
    return names, ddp.mean(sums / A, dist).tolist()


def _update(parts: Parts, ts: TrainStepConfig, opt: torch.optim.Optimizer) -> None:
    """Clip, step (through the loss scaler with fp16) and refresh the EMA copy."""
    scaler = parts.scaler
    if scaler:
        scaler.unscale_(opt)
    if ts.clip_grad > 0:
        torch.nn.utils.clip_grad_norm_(parts.nets[ts.network].parameters(), ts.clip_grad)
    if scaler:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    if ts.network in parts.emas:
        parts.emas[ts.network].update(parts.nets[ts.network])


def _checkpoint(cfg: RecipeConfig, parts: Parts, done: int, seconds: float) -> dict[str, Any]:
    """Everything a resume needs: weights, EMA copies, optimizer and scaler states, the random state, the
    resolved recipe and the networks' constructor arguments."""
    return {"networks": {n: m.state_dict() for n, m in parts.nets.items()},
            "ema": {n: e.model.state_dict() for n, e in parts.emas.items()},
            "optimizers": [o.state_dict() for o in parts.opts],
            "schedules": [{"lr": ts.optimizer.lr * lr_factor(done, ts.schedule, cfg.total_steps)}
                          for ts in cfg.steps],
            "scaler": parts.scaler.state_dict() if parts.scaler else {}, "step": done, "seconds": seconds,
            "rng": ckpt.rng_state(), "config": to_dict(cfg), "params": parts.params}


def grad_scaler(amp: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 on CUDA trains with a loss scale (bf16 and fp32 need none)."""
    return torch.amp.GradScaler("cuda") if amp == torch.float16 and device.type == "cuda" else None


def _quant(cfg: RecipeConfig) -> int:
    """Dequantisation of the nll loss (0 without one)."""
    return next((loss.dequantisation for loss in cfg.losses.values() if loss.type == "nll"), 0)


def _optimizer(ts: TrainStepConfig, net: torch.nn.Module) -> torch.optim.Optimizer:
    """One parameter group per learning-rate multiplier (``optimizer.lr_mult``, by name prefix; the
    longest prefix that matches wins), each group's multiplier kept as its "lr_mult". With
    ``optimizer.train_only`` the other parameters are frozen (no gradients) and left out."""
    o = ts.optimizer
    groups: dict[float, list[torch.nn.Parameter]] = {}
    used = set()
    for name, p in net.named_parameters():
        trains = o.train_only is None or any(name.startswith(k) for k in o.train_only)
        used.update(k for k in o.train_only or [] if name.startswith(k))
        if not trains:
            p.requires_grad_(False)
            continue
        prefix = max((k for k in o.lr_mult if name.startswith(k)), key=len, default=None)
        used.add(prefix)
        groups.setdefault(o.lr_mult.get(prefix, 1.0), []).append(p)
    for key, names in (("lr_mult", o.lr_mult), ("train_only", o.train_only or [])):
        unused = sorted(set(names) - used)
        if unused:
            raise VsrError(f"optimizer.{key}.{unused[0]}: no trained parameter of network '{ts.network}' "
                           f"starts with '{unused[0]}'")
    cls = torch.optim.AdamW if o.type == "adamw" else torch.optim.Adam
    return cls([{"params": ps, "lr": o.lr * m, "lr_mult": m} for m, ps in groups.items()],
               lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)


def _terms(cfg: RecipeConfig, ts: TrainStepConfig, active: list[str], net: torch.nn.Module,
           wrapped: dict[str, torch.nn.Module], mb: dict[str, torch.Tensor], m: int,
           fakes: dict[int, tuple[torch.Tensor, torch.Tensor]], fixed: dict[str, torch.nn.Module], step: int,
           dist: ddp.Dist) -> dict[str, torch.Tensor]:
    """The weighted loss terms of one training step on one micro-batch."""
    clips = mb["lq"].ndim == 5  # (B, T, C, p, p): the generator runs over clips
    lq = mb["lq"] if clips else mb["lq"].contiguous(memory_format=torch.channels_last)
    hq = mb["hq"]
    if cfg.networks[ts.network].arch in DISCRIMINATORS:  # the discriminator's side of the GAN losses
        if m in fakes:
            real, fake = fakes[m]
        else:
            with torch.no_grad():
                real, fake = hq, wrapped[cfg.generator](lq).float()
            if clips:  # every frame is an image to judge
                real, fake = real.flatten(0, 1), fake.flatten(0, 1)
        rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 101 + dist.rank)
        return {name: cfg.losses[name].weight * loss_types.get(cfg.losses[name].type).judge(
                    cfg.losses[name], net, real, fake, rng) for name in active}
    if hasattr(ddp.unwrap(net), "latent_shapes"):  # a flow: the likelihood of the target, pixel losses
        scene = loss_types.Scene(lq=lq, target=hq, mb=mb, net=net, nets=wrapped,  # on the temperature-0 image
                                 make_out=lambda: losses.flow_mean(ddp.unwrap(net), lq))
        return loss_types.terms(cfg, active, scene, fixed)
    if clips:
        return temporal.clip_terms(cfg, active, net, mb, wrapped, fakes, m, fixed)
    made = {}
    trans = next((n for n in active if cfg.losses[n].type == "translational"), None)
    if trans:
        out, t, cut = loss_types.get("translational").generate(net, lq, mb, loss=cfg.losses[trans],
                                                               patch=cfg.data.patch, scale=cfg.scale)
        scene = loss_types.Scene(lq=lq, target=cut(hq), mb=mb, net=net, nets=wrapped, make_out=lambda: out, cut=cut)
        made[trans] = cfg.losses[trans].weight * t
    else:
        out = net(lq)
        scene = loss_types.Scene(lq=lq, target=hq, mb=mb, net=net, nets=wrapped, make_out=lambda: out)
    terms = loss_types.terms(cfg, active, scene, fixed, made)
    fakes[m] = (scene.target, scene.out.detach())
    return terms
