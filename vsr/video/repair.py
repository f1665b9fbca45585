"""Tape repair: what a VHS tape and deck did to the picture (chroma delay, dropouts, the head-switching band,
chroma noise, line jitter), undone on decoded frames after the ingest filters and before the network.

Which repairs an input gets is measured once on a sample of it (:func:`plan_repair`); the stage then runs them
over the video in order (:class:`RepairStage`; the repairs themselves are in :mod:`vsr.video.mend` and
:mod:`vsr.video.jitter`). The chroma delay is undone on each decoded frame before it becomes RGB
(:func:`vsr.video.mend.undo_chroma_delay`); a frame's other repairs look at the frames around it only
(:attr:`RepairPlan.radius`), so a resumed run that decodes those frames before its start point again repairs
exactly as an uninterrupted one did.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from vsr.errors import VsrError
from vsr.video.jitter import detect_jitter, luma, measure_jitter, undo_jitter
from vsr.video.mend import (chroma_delay_certainty, chroma_noise_level, denoise_chroma, fill_dropouts, find_dropouts,
                            head_switching_band, measure_chroma_delay, peak, repair_head_switching)

REPAIRS = ("chroma-delay", "dropouts", "head-switching", "chroma-noise", "jitter")
MAX_CHROMA_DELAY = 8.0  # px: farther than any deck puts it; a larger forced value is a mistake
APPLY_CHROMA_DELAY = 0.75  # px: smaller measured delays are left alone (digital chroma siting is within 0.5)
CHROMA_NOISE = 2.0  # code levels: chroma noisier than this is denoised (digital video's is under 1)
REPEAT = (0.3, 3.0)  # levels: a frame within this of the one before on average and at most (at 1/4 size) repeats it
PROBES = 12  # shots spread over a long clip whose chroma delay is measured
CERTAIN = (1.03, 1.045)  # a delay is applied only where the misfit rises at least this much 1 px off it (x, y)


@dataclass(frozen=True)
class RepairOptions:
    """What to repair: ``mode`` off, auto (each repair detects and applies what it finds) or a set of names
    (those only, each still measured); ``chroma_delay`` (dx, dy) forces that value; ``drop_repeats`` leaves
    out the frames a capture repeated (with any repair on)."""

    mode: str = "off"
    chroma_delay: tuple[float, float] | None = None
    drop_repeats: bool = False  # frames the capture repeated are left out (their timestamps with them)

    def __post_init__(self) -> None:
        self.wanted()
        if self.chroma_delay is not None and max(map(abs, self.chroma_delay)) > MAX_CHROMA_DELAY:
            raise VsrError(f"--chroma-delay {self.chroma_delay[0]:g},{self.chroma_delay[1]:g}: a deck delays "
                           f"chroma by a few pixels; give values within +-{MAX_CHROMA_DELAY:g}")
        if self.drop_repeats and self.mode == "off":
            raise VsrError("--drop-repeats needs tape repair on: add --repair auto (or a list)")

    def wanted(self) -> frozenset[str]:
        if self.mode == "off":
            return frozenset()
        if self.mode == "auto":
            return frozenset(REPAIRS)
        names = [n.strip() for n in self.mode.split(",") if n.strip()]
        unknown = [n for n in names if n not in REPAIRS]
        if unknown or not names:
            raise VsrError(f"--repair {self.mode}: unknown repair {unknown[0] if unknown else '(none)'!r}; "
                           f"expected auto, off or a comma list of {', '.join(REPAIRS)}")
        return frozenset(names)


@dataclass(frozen=True)
class RepairPlan:
    """The repairs one input gets (measurement done). Part of a resume manifest's identity."""

    chroma_delay: tuple[float, float] | None = None  # applied (dx, dy), px: chroma moved right/down by the tape
    chroma_parts: tuple[tuple[float, tuple[float, float] | None], ...] = ()  # (start s, delay) where it differs
    dropouts: bool = False
    head_switching: int = 0  # rows of the band at the bottom of the picture
    chroma_noise: bool = False
    jitter: float | None = None  # mean |line offset| measured, px: undone when set
    drop_repeats: bool = False
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def active(self) -> bool:
        return bool(self.chroma_delay or any(d for _, d in self.chroma_parts) or self.dropouts or self.head_switching
                    or self.chroma_noise or self.jitter or self.drop_repeats)

    def delay_at(self, time: float | None) -> tuple[float, float] | None:
        """The chroma delay to undo on a frame at ``time`` s."""
        if not self.chroma_parts:
            return self.chroma_delay
        delay = self.chroma_parts[0][1]
        for start, d in self.chroma_parts[1:]:
            if time is not None and time >= start - 1e-6:
                delay = d
        return delay

    @property
    def radius(self) -> int:
        """Frames before and after a frame that its repair looks at."""
        return 2 if self.jitter or self.chroma_noise else 1 if self.dropouts else 0

    def identity(self) -> dict[str, object]:
        return {"chroma_delay": list(self.chroma_delay) if self.chroma_delay else None,
                "dropouts": self.dropouts, "head_switching": self.head_switching, "chroma_noise": self.chroma_noise,
                "jitter": self.jitter, "drop_repeats": self.drop_repeats,
                **({"chroma_parts": [[t, list(d) if d else None] for t, d in self.chroma_parts]}
                   if self.chroma_parts else {})}


def plan_repair(options: RepairOptions, sample: list[np.ndarray], runs: list[list[np.ndarray]] | None = None
                ) -> RepairPlan:
    """Measure what ``options`` asks for on ``sample`` (frames spread over the clip, from :func:`yuv_planes`,
    cropped as the stage will see them) and decide the repairs. Line jitter is measured on ``runs`` (a few
    consecutive frames at places spread over the clip; none: not measured)."""
    wanted = options.wanted()
    notes = []
    delay = None
    if options.chroma_delay is not None:
        delay = tuple(float(v) for v in options.chroma_delay)
        notes.append(f"chroma moved back by {delay[0]:+.2f}, {delay[1]:+.2f} px (--chroma-delay)")
    elif "chroma-delay" in wanted and sample:
        # measured on the odd and the even frames of the sample apart: a delay is the tape's, the same in
        # both; a value that only some pictures give is the content's, and is left alone
        delay, _ = chroma_delay_of(sample, notes)
    rows = head_switching_band([f[..., 0] for f in sample]) if "head-switching" in wanted and sample else 0
    if rows:
        notes.append(f"head-switching band of {rows} lines at the bottom repaired")
    noisy = False
    if "chroma-noise" in wanted and sample:
        level = chroma_noise_level(sample)
        noisy = level >= CHROMA_NOISE
        if noisy:
            notes.append(f"chroma noise of {level:.1f} levels: denoised over the frames around each")
    jitter = detect_jitter([[f[..., 0] for f in run] for run in runs]) if "jitter" in wanted and runs else None
    if jitter:
        notes.append(f"line jitter of {jitter:.2f} px (mean) measured: each line moved back")
    if delay == (0.0, 0.0):
        delay = None
    return RepairPlan(chroma_delay=delay, dropouts="dropouts" in wanted, head_switching=rows, chroma_noise=noisy,
                      jitter=jitter, drop_repeats=options.drop_repeats, notes=tuple(notes))


def chroma_delay_of(sample: list[np.ndarray], notes: list[str]) -> tuple[tuple[float, float] | None, bool]:
    """(the delay to undo, or None; whether the sample could tell) from the sample's odd and even frames apart."""
    halves = [measure_chroma_delay(sample[k::2]) for k in (0, 1)] if len(sample) > 1 else \
        [measure_chroma_delay(sample)] * 2
    if None in halves:
        notes.append("chroma delay not measurable (too few coloured edges): left alone; --chroma-delay DX,DY sets it")
        return None, False
    dx, dy = (round((a + b) / 2, 2) for a, b in zip(*halves))
    if max(abs(dx), abs(dy)) < APPLY_CHROMA_DELAY:
        return None, True
    sharp = chroma_delay_certainty(sample, (dx, dy))
    if max(abs(a - b) for a, b in zip(*halves)) > 0.5 or sharp[0] < CERTAIN[0] or sharp[1] < CERTAIN[1] \
            or abs(dx) > 5.9 or abs(dy) > 1.9:
        notes.append(f"chroma delay not measurable ({halves[0][0]:+.2f}, {halves[0][1]:+.2f} px on half of the "
                     f"sample, {halves[1][0]:+.2f}, {halves[1][1]:+.2f} on the other; too few clear coloured "
                     "edges): left alone; --chroma-delay DX,DY sets it")
        return None, False
    notes.append(f"chroma delay {dx:+.2f}, {dy:+.2f} px (right, down) measured and undone")
    return (dx, dy), True


def chroma_delay_by_shot(plan: RepairPlan, shots: list[tuple[float, float]],
                         sample_of: Callable[[tuple[float, float]], list[np.ndarray]]) -> RepairPlan:
    """``plan`` with the chroma delay followed along the clip: measured on a sample of each of up to
    ``PROBES`` shots spread over it (``sample_of(span)`` gives one); between two that disagree by more than
    0.3 px (recordings made on different decks), the shot where it changes is found by halving; each part
    from there gets the delay its measured shots give. Unchanged where all agree."""
    found: dict[int, tuple[float, float] | None] = {}

    def at(i: int) -> tuple[float, float] | None:  # shot i's delay ((0, 0): below the threshold), None: unknown
        if i not in found:
            d, ok = chroma_delay_of(sample_of(shots[i]), [])
            found[i] = (d or (0.0, 0.0)) if ok else None
        return found[i]

    def differ(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return max(abs(a[0] - b[0]), abs(a[1] - b[1])) > 0.3

    n = len(shots)
    probes = sorted({min(n - 1, round(k * (n - 1) / (PROBES - 1))) for k in range(PROBES)})
    known = [(i, at(i)) for i in probes if at(i) is not None]
    starts = [0]
    for (lo, a), (hi, b) in zip(known, known[1:]):
        if not differ(a, b):
            continue
        while hi - lo > 1:  # the change is after shot lo, at or before shot hi
            mid = next((m for m in range((lo + hi) // 2, hi) if at(m) is not None), None)
            if mid is None:
                break
            lo, hi = (lo, mid) if differ(at(mid), a) else (mid, hi)
        starts.append(hi)
    if len(starts) == 1:
        return plan
    parts = []
    for s, e in zip(starts, [*starts[1:], n]):
        values = [found[i] for i in range(s, e) if found.get(i) is not None]
        d = tuple(round(float(np.median([v[k] for v in values])), 2) for k in (0, 1)) if values else None
        parts.append((round(shots[s][0], 3), d if d and max(map(abs, d)) >= APPLY_CHROMA_DELAY else None))
    said = ", ".join(f"from {t:.1f} s {f'{d[0]:+.2f}, {d[1]:+.2f} px' if d else 'none'}" for t, d in parts)
    notes = [n for n in plan.notes if not n.startswith("chroma delay")]
    return replace(plan, chroma_delay=None, chroma_parts=tuple(parts),
                   notes=(*notes, f"chroma delay changes along the clip, undone by part: {said}"))


# --- the stage -----------------------------------------------------------------------------------------

def repair_frame(plan: RepairPlan, rgb: np.ndarray, neighbours: list[np.ndarray], before: int
                 ) -> tuple[np.ndarray, int]:
    """One RGB frame repaired with its (unrepaired) neighbours in time order, the first ``before`` of them
    before it: (frame, dropout streaks filled). Jitter first (the other repairs compare lines with the lines
    around them), the band last (it is repaired from the lines above it)."""
    filled = 0
    if plan.jitter and neighbours:
        offsets = measure_jitter(luma(rgb), [luma(n) for n in neighbours], before)
        if plan.head_switching:  # torn sideways by the band's own repair
            offsets[-plan.head_switching - 2:] = 0.0
        rgb = undo_jitter(rgb, offsets)
    nearest = neighbours[max(0, before - 1):before + 1]  # the frame before and the frame after
    if plan.dropouts and nearest:
        mask, aligned = find_dropouts(rgb, nearest)
        if plan.head_switching:  # the band is torn and noisy throughout: its own repair handles it
            mask[-plan.head_switching - 2:] = False
        if mask.any():
            rgb, filled = fill_dropouts(rgb, mask, aligned)
    if plan.chroma_noise and neighbours:
        rgb = denoise_chroma(rgb, neighbours)
    if plan.head_switching:
        rgb = repair_head_switching(rgb, plan.head_switching)
    return rgb, filled


@dataclass
class RepairStats:
    dropouts_filled: int = 0
    repeated: list[float] = field(default_factory=list)  # seconds: frames the capture repeated
    gaps: list[float] = field(default_factory=list)  # seconds: frames that follow a gap in the timestamps
    _small: np.ndarray | None = None  # the frame before, at 1/4 size
    _time: float | None = None
    _steps: deque[float] = field(default_factory=lambda: deque(maxlen=25))  # the last steps in the timestamps

    def repeats(self, rgb: np.ndarray) -> bool:
        """Whether ``rgb`` repeats the frame before it (every decoded frame comes here, counted or not): equal,
        or nearly (a capture card fills a lost frame with the last one, which the encoder may have coded again
        with a little loss; two real frames differ by the tape's noise at least)."""
        small = cv2.resize(rgb, (max(1, rgb.shape[1] // 4), max(1, rgb.shape[0] // 4)),
                           interpolation=cv2.INTER_AREA).astype(np.float32) * (255.0 / peak(rgb))
        prev, self._small = self._small, small
        if prev is None:
            return False
        diff = np.abs(small - prev)
        return float(diff.mean()) < REPEAT[0] and float(diff.max()) < REPEAT[1]

    def see(self, time: float, filled: int, repeat: bool) -> None:
        """One frame of the output's at ``time`` s with ``filled`` dropouts, or a repeat left out: a gap is a
        step in the timestamps of more than one and three quarter frames (a capture card dropped frames, audio
        went on), a frame being the median of the last steps (a webcam's or a phone's rate is not the one its
        stream states)."""
        self.dropouts_filled += filled
        if repeat:
            self.repeated.append(round(time, 3))
        if self._time is not None:
            step = time - self._time
            usual = float(np.median(self._steps)) if len(self._steps) >= 3 else None  # judged from the fourth
            if usual and step > 1.75 * usual:
                self.gaps.append(round(time, 3))
            self._steps.append(step)
        self._time = time

    def report(self, plan: RepairPlan) -> dict[str, object]:
        """What the repairs found, as ``--json`` gives it."""
        return {"chroma_delay": list(plan.chroma_delay) if plan.chroma_delay else None,
                "dropouts_filled": self.dropouts_filled, "head_switching_lines": plan.head_switching,
                "chroma_noise": plan.chroma_noise, "jitter_px": plan.jitter, "repeated_frames": self.repeated,
                "gaps": self.gaps, **({"repeats_dropped": len(self.repeated)} if plan.drop_repeats else {}),
                **({"chroma_delay_parts": [[t, *(d or (None, None))] for t, d in plan.chroma_parts]}
                   if plan.chroma_parts else {})}


class RepairStage:
    """Frames in, in order, as (tag, rgb); the same frames out, repaired, as (tag, rgb, dropout streaks filled),
    ``plan.radius`` frames later (and the rest at :meth:`flush`). The tag (whatever the caller keeps with a
    frame) comes back untouched. The caller counts what it keeps in :attr:`stats` (a resumed decode repairs
    frames before its start point again, for their neighbours, but does not count them).
    The chroma delay is not undone here but before the frame becomes RGB (:func:`undo_chroma_delay`)."""

    def __init__(self, plan: RepairPlan) -> None:
        self.plan = plan
        self.stats = RepairStats()
        self._buf: deque[tuple[object, np.ndarray]] = deque()
        self._next = 0  # position in _buf of the next frame to hand back

    def push(self, tag: object, rgb: np.ndarray) -> list[tuple[object, np.ndarray, int]]:
        self._buf.append((tag, rgb))
        return self._ready(final=False)

    def flush(self) -> list[tuple[object, np.ndarray, int]]:
        return self._ready(final=True)

    def _ready(self, *, final: bool) -> list[tuple[object, np.ndarray, int]]:
        r, out = self.plan.radius, []
        while self._next < len(self._buf) and (final or len(self._buf) - 1 - self._next >= r):
            i = self._next
            tag, rgb = self._buf[i]
            neighbours = [self._buf[j][1] for j in range(max(0, i - r), min(len(self._buf), i + r + 1)) if j != i]
            out.append((tag, *repair_frame(self.plan, rgb, neighbours, i - max(0, i - r))))
            self._next += 1
            while self._next > r:
                self._buf.popleft()
                self._next -= 1
        return out
