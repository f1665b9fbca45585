"""Honest time: once the first frames of a video are measured, one line says how long the whole file will
take; on a CPU, when that is over an hour, it also names what in the zoo would be faster.

The line is said once per video, before most of the work: a job of hours should not be discovered by
watching a progress bar. What is faster is decided by counting each named model's arithmetic per input
pixel (the same operator-level count as `vsr bench`), so the advice follows whatever the zoo holds.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from . import zoo
from .arch import ModelDescriptor
from .engine import Upscaler
from .engine.measure import count_flops

SHOW_OVER_S = 5 * 60  # shorter jobs: the progress bar's own ETA says enough
SUGGEST_OVER_S = 60 * 60  # on a CPU, beyond this a faster option is named
MEASURE_S = 5.0  # a first batch quicker than this is mostly warm-up: the batches after it are timed instead
FASTER_BY = 2.0  # an option must need this many times fewer operations to be worth naming


def format_duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 90:
        return f"{s} s"
    if s < 3600:
        return f"{round(s / 60)} min"
    if s < 48 * 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


class Projection:
    """Fed with ``progress(done, total)`` (frames) by the video layer: the first call when frames start,
    then one after each encoded batch. Says the line through ``write`` once enough has been measured.

    ``hint(seconds) -> str | None``: a faster option for a job of that many seconds (asked on a CPU only,
    beyond SUGGEST_OVER_S); ``clock``: seconds, monotonic.
    """

    def __init__(self, *, name: str, device: torch.device, write: Callable[[str], None],
                 hint: Callable[[float], str | None] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.name, self.device, self.write, self.hint, self.clock = name, device, write, hint, clock
        self.start: tuple[float, int] | None = None  # (time, frames done) when frames started
        self.first: tuple[float, int] | None = None  # after the first encoded batch
        self.done = False  # said, or nothing to say

    def progress(self, done: int, total: int | None) -> None:
        now = self.clock()
        if self.start is None:
            self.start = (now, done)
            return
        if self.done or not total:  # no frame count: no whole-file projection (the bar shows no ETA either)
            return
        if done >= total:
            self.done = True
            return
        t0, d0 = self.start
        if self.first is None:
            self.first = (now, done)
            if now - t0 < MEASURE_S:
                return
            per_frame = (now - t0) / max(done - d0, 1)
        else:
            t1, d1 = self.first
            if now - t1 < MEASURE_S or done == d1:
                return
            per_frame = (now - t1) / (done - d1)
        self.done = True
        whole = now - t0 + (total - done) * per_frame
        if whole >= SHOW_OVER_S:
            self.write(projected(self.name, whole, total, per_frame, self.device, self.hint))


def projected(name: str, whole: float, total: int, per_frame: float, device: torch.device,
              hint: Callable[[float], str | None] | None) -> str:
    """The line: ``whole`` seconds for ``total`` frames at ``per_frame``, and on a CPU beyond
    SUGGEST_OVER_S the faster option ``hint`` names."""
    line = f"{name}: about {format_duration(whole)} for {total} frames ({per_frame:.2f} s per frame on {device.type})"
    if device.type == "cpu" and whole > SUGGEST_OVER_S and hint is not None:
        faster = hint(whole)
        if faster:
            line += f"; faster: {faster}"
    return line


@dataclass(frozen=True, kw_only=True)
class Option:
    flags: str  # what to add to the command line
    flops_per_px: float
    keeps_scale: bool


def flops_per_pixel(desc: ModelDescriptor) -> float:
    """Arithmetic per input pixel of one frame through the engine (by its contract), on a small input:
    convolutions cost the same at every pixel, so a few hundred pixels give the rate."""
    m = desc.size_multiple
    side = -(-16 // m) * m
    # a copy: the network may be running in another thread; counting must not move or change it
    engine = Upscaler(replace(desc, model=copy.deepcopy(desc.model)), device="cpu", precision="fp32", tile=0)
    x = torch.rand(1, desc.in_ch, side, side, generator=torch.Generator().manual_seed(0))
    return count_flops(lambda: engine(x)) / side ** 2


def zoo_options(*, model: str, card_name: str | None, scale: float) -> list[Option]:
    """Every named RGB model made for the same content as the running one (a weights file without a card
    counts as photographic) as the flags that would pick it, with its arithmetic per input pixel; a card
    ``NAME-xS`` whose NAME is a card too is spelt ``--model NAME --scale S``."""
    cards = zoo.cards()
    content = cards[card_name].content if card_name in cards else "photographic"
    options = []
    for name, card in sorted(cards.items()):
        if name in (model, card_name) or card.content != content:
            continue
        try:
            desc = zoo.load_card(card, cache=False)
            cost = flops_per_pixel(desc)
        except Exception:  # noqa: BLE001 - a card that cannot be loaded is simply not advice
            continue
        if desc.in_ch != 3 or desc.out_ch != 3:
            continue
        suffix = f"-x{card.scale:g}"
        base = name[:-len(suffix)] if name.endswith(suffix) and name[:-len(suffix)] in cards else name
        keeps = abs(card.scale - scale) < 1e-6
        flags = " ".join(([] if base == model else [f"--model {base}"]) +
                         ([] if keeps else [f"--scale {card.scale:g}"]))
        if flags:
            options.append(Option(flags=flags, flops_per_px=cost, keeps_scale=keeps))
    return options


def choose(options: list[Option], *, current_flops_per_px: float, seconds: float) -> str | None:
    """The option to name for a job of ``seconds``: of those at least FASTER_BY times cheaper, the most
    capable (most arithmetic) that would fit in SUGGEST_OVER_S at the same rate, the user's scale first;
    when none fits, the cheapest. None when nothing is much cheaper."""
    cheaper = [o for o in options if o.flops_per_px * FASTER_BY <= current_flops_per_px]
    if not cheaper:
        return None

    def estimate(o: Option) -> float:
        return seconds * o.flops_per_px / current_flops_per_px

    fits = [o for o in cheaper if estimate(o) <= SUGGEST_OVER_S]
    best = max(fits, key=lambda o: (o.keeps_scale, o.flops_per_px)) if fits else \
        min(cheaper, key=lambda o: o.flops_per_px)
    ratio = current_flops_per_px / best.flops_per_px
    times = f"{ratio:.0f}" if ratio >= 10 else f"{ratio:.1f}"
    return (f"{best.flags} ({times}x fewer operations per frame; about {format_duration(estimate(best))} "
            "if it runs as efficiently)")


class FasterOptions:
    """``hint`` for :class:`Projection`: the zoo is looked at once per job (loading each named model),
    the first time a video is projected to be long, and the answer is chosen per video."""

    def __init__(self, *, desc: ModelDescriptor, model: str, card_name: str | None, scale: float) -> None:
        self.desc, self.model, self.card_name, self.scale = desc, model, card_name, scale
        self.options: list[Option] | None = None
        self.current = 0.0

    def __call__(self, seconds: float) -> str | None:
        try:
            if self.options is None:
                self.options = []  # also when counting fails below: asked once
                self.current = flops_per_pixel(self.desc)
                self.options = zoo_options(model=self.model, card_name=self.card_name, scale=self.scale)
            return choose(self.options, current_flops_per_px=self.current, seconds=seconds) if self.current else None
        except Exception:  # noqa: BLE001 - advice must never stop the video it is about
            return None
