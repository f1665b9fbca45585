"""``vsr compare A B [--reference R] [--input LR]``: two restorations of the same clip, in numbers and pictures.

For each of A and B, frame by frame: PSNR-Y and SSIM-Y against the reference and TecoGAN's tOF (with
``--reference``), and the warping error (no reference needed; see vsr.metrics for the definitions). Prints
a table of means and per-frame spread, writes a side-by-side picture (one frame of A | B | reference) and a
per-frame plot into the output folder, or prints a JSON summary with ``--json``.

A, B and the reference are video files or folders of frames (images, in natural name order) of the same
length and size; or A is the input B was upscaled from (smaller on both sides, no reference): A is then
enlarged plainly (bicubic) to B's size, and the warping error follows A's own motion. Frames are streamed:
memory does not grow with the length of the clip.
"""
from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generator, Iterator

import av
import cv2
import numpy as np

from . import metrics
from .errors import VsrError
from .images import IMAGE_SUFFIXES, read_image, to_rgb8, write_image
from .video.frames import rgb_frames
from .video.probe import probe

PICTURE = "side_by_side.png"
PLOT = "per_frame.png"
# key, label, higher is better
METRICS = (("psnr_y", "PSNR-Y (dB)", True), ("ssim_y", "SSIM-Y", True), ("tof", "tOF (px)", False),
           ("warping_error", "warping error (x1e-3)", False))  # shown in thousandths; JSON keeps the values
COLOURS = {"A": (31, 119, 180), "B": (255, 127, 14), "reference": (110, 110, 110)}  # RGB


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``vsr compare``."""
    parser.add_argument("a", type=Path, metavar="A", help="a video file or a folder of frames; or B's input, "
                        "smaller: then enlarged plainly (bicubic) to B's size")
    parser.add_argument("b", type=Path, metavar="B", help="another restoration of the same clip, same size")
    parser.add_argument("--reference", "-r", type=Path, help="the ground truth at the same size: adds "
                        "PSNR-Y, SSIM-Y and tOF, and the motion the warping error follows")
    parser.add_argument("--input", "-i", type=Path, dest="input", help="the low-resolution clip A and B were "
                        "upscaled from: the warping error follows its motion (unless --reference is given)")
    parser.add_argument("-o", "--output", type=Path, default=Path("vsr-compare"),
                        help=f"folder for {PICTURE} and {PLOT} (default vsr-compare)")
    parser.add_argument("--max-frames", type=int, help="only the first N frames")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


# --- reading --------------------------------------------------------------------------------------------

def _natural(path: Path) -> list:
    """frame2.png before frame10.png."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


@dataclass
class Clip:
    """Frames to read, and how many there are when that is known before decoding."""

    frames: Generator[np.ndarray, None, None]  # (H, W, 3) uint8 RGB
    count: int | None  # exact: a folder's images, or a video whose container indexes every frame
    estimate: int | None  # from the duration and rate when nothing better is known


def _video_frames(label: str, path: Path) -> Clip:
    try:
        info = probe(path)  # a one-line VsrError for anything that is not a usable video
    except VsrError as e:
        raise VsrError(f"{label}: {e}") from None

    def frames() -> Generator[np.ndarray, None, None]:
        n = 0
        try:
            for frame in rgb_frames(path, info):  # the input's own matrix and range, as vsr upscale reads it
                n += 1
                yield frame
        except av.error.FFmpegError as e:
            reason = getattr(e, "strerror", None) or e
            raise VsrError(f"{label}: {path} cannot be decoded after {n} frames ({reason}); "
                           f"re-copy it, or compare the frames before with --max-frames {n}") from None

    return Clip(frames(), info.declared_frames or None, info.frames)


def open_clip(label: str, path: Path) -> Clip:
    """The frames of a video file or of a folder of images (in natural name order)."""
    if not path.exists():
        raise VsrError(f"{label}: {path} does not exist; give a video file or a folder of frames")
    if not path.is_dir():
        return _video_frames(label, path)
    files = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=_natural)
    if not files:
        raise VsrError(f"{label}: {path} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                       "give a folder of frames or a video file")
    return Clip((to_rgb8(read_image(f)) for f in files), len(files), len(files))


def _lockstep(clips: dict[str, Iterator[np.ndarray]], max_frames: int | None) -> Iterator[dict[str, np.ndarray]]:
    """One frame of every clip at a time; a clip that ends before the others is an error."""
    i = 0
    while max_frames is None or i < max_frames:
        got = {k: next(it, None) for k, it in clips.items()}
        ended = [k for k, f in got.items() if f is None]
        if len(ended) == len(got):
            return
        if ended:
            going = [k for k in got if k not in ended]
            hint = f", or only the first ones with --max-frames {i}" if i >= 2 else ""
            raise VsrError(f"{' and '.join(ended)} {'ends' if len(ended) == 1 else 'end'} after {i} frames but "
                           f"{' and '.join(going)} {'goes' if len(going) == 1 else 'go'} on; compare clips of the "
                           f"same length{hint}")
        yield got
        i += 1


def _smaller(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape[0] < b.shape[0] and a.shape[1] < b.shape[1]


def _size(frame: np.ndarray) -> str:
    return f"{frame.shape[1]}x{frame.shape[0]}"


def _check_sizes(frames: dict[str, np.ndarray], index: int) -> None:
    a = frames["A"]
    for k in ("B", "reference"):
        if k in frames and frames[k].shape != a.shape:
            what = "the reference must be the ground truth at the size of the outputs" if k == "reference" \
                else "compare outputs of the same size (the same --scale)"
            raise VsrError(f"{k} is {_size(frames[k])} but A is {_size(a)} (frame {index}); {what}")
    if index == 0 and "reference" in frames and min(a.shape[:2]) < 48:
        raise VsrError(f"frames of {_size(a)} are too small for tOF, which needs 48x48 or more; "
                       "compare without --reference")


# --- measuring ------------------------------------------------------------------------------------------

@dataclass
class Comparison:
    """Per-frame values of every measure, for A, B (and the reference's own warping error)."""

    paths: dict[str, Path]  # "A", "B", maybe "reference", "input"
    frames: int = 0
    flow_from: str = ""  # whose motion the warping error follows
    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # clip -> measure -> per frame
    shown: dict[str, np.ndarray] = field(default_factory=dict)  # the frame in the picture, per clip
    shown_index: int = 0
    enlarged: bool = False  # A was smaller than B and is shown and measured enlarged with bicubic

    def series(self, clip: str, key: str) -> list[tuple[int, float]]:
        """(frame number, value) pairs; temporal measures start at frame 1 (the pair 0 -> 1)."""
        v = self.values.get(clip, {}).get(key, [])
        return list(zip(range(self.frames - len(v), self.frames), v))


def compare(a: Path, b: Path, *, reference: Path | None = None, lowres: Path | None = None,
            max_frames: int | None = None) -> Comparison:
    """Measure A and B frame by frame (see the module docstring). The warping error follows the motion of
    the reference when there is one (the true motion), else of the low-resolution input (what the
    restorations were made from: one motion judges both, and neither one's flicker can bend it), else each
    clip's own."""
    if max_frames is not None and max_frames < 2:
        raise VsrError(f"--max-frames {max_frames}: the temporal measures need at least 2 frames")
    paths = {"A": a, "B": b}
    paths.update({k: p for k, p in (("reference", reference), ("input", lowres)) if p is not None})
    opened = {k: open_clip(k, p) for k, p in paths.items()}
    known = {k: c.count for k, c in opened.items() if c.count is not None}
    if len(set(known.values())) > 1:
        shortest = min(known.values())
        if max_frames is None or max_frames > shortest:
            counts = ", ".join(f"{k} has {n}" for k, n in known.items())
            raise VsrError(f"the clips differ in length ({counts} frames); compare clips of the same length, "
                           f"or only the first ones with --max-frames {shortest}")
    expected = min([c.estimate for c in opened.values() if c.estimate] + [max_frames or math.inf])
    show_at = 0 if expected == math.inf else int(expected) // 2  # the middle frame goes in the picture

    out = Comparison(paths=paths)
    out.flow_from = "reference" if reference else "input" if lowres else "own"
    outputs = ("A", "B")
    out.values = {k: {m: [] for m, _, _ in METRICS if reference or m == "warping_error"} for k in outputs}
    if reference:
        out.values["reference"] = {"warping_error": []}
    prev: dict[str, np.ndarray] = {}
    try:
        for i, cur in enumerate(_lockstep({k: c.frames for k, c in opened.items()}, max_frames)):
            if i == 0 and not reference and _smaller(cur["A"], cur["B"]):  # input against its output
                out.enlarged = True
                out.flow_from = "input" if out.flow_from == "own" else out.flow_from
            if out.enlarged:
                cur.setdefault("input", cur["A"])
                cur["A"] = cv2.resize(cur["A"], cur["B"].shape[1::-1], interpolation=cv2.INTER_CUBIC)
            _check_sizes(cur, i)
            if i <= show_at:
                out.shown, out.shown_index = {k: f for k, f in cur.items() if k != "input"}, i
            if reference:
                for k in outputs:
                    out.values[k]["psnr_y"].append(metrics.psnr(cur[k], cur["reference"]))
                    out.values[k]["ssim_y"].append(metrics.ssim(cur[k], cur["reference"]))
            if prev:
                _temporal(out, prev, cur)
            prev = cur
            out.frames = i + 1
    finally:
        for c in opened.values():
            c.frames.close()  # closes a video file now, not when it is garbage-collected
    if out.frames < 2:
        raise VsrError(f"the clips hold {out.frames} frame{'s' * (out.frames != 1)}; "
                       "the temporal measures need at least 2")
    return out


def _temporal(out: Comparison, prev: dict[str, np.ndarray], cur: dict[str, np.ndarray]) -> None:
    """tOF and warping error of the pair of frames prev -> cur, each flow computed once."""
    h, w = cur["A"].shape[:2]
    shared = out.flow_from if out.flow_from != "own" else None
    motion = metrics.estimate_motion(prev[shared], cur[shared], (w, h)) if shared else None
    if "reference" in cur:
        truth_flow = metrics.tof_flow(prev["reference"], cur["reference"])
        out.values["reference"]["warping_error"].append(
            metrics.warping_error_pair(prev["reference"], cur["reference"], motion))
    for k in ("A", "B"):
        if "reference" in cur:
            out.values[k]["tof"].append(metrics.flow_distance(metrics.tof_flow(prev[k], cur[k]), truth_flow))
        m = motion or metrics.estimate_motion(prev[k], cur[k])
        out.values[k]["warping_error"].append(metrics.warping_error_pair(prev[k], cur[k], m))


# --- reporting ------------------------------------------------------------------------------------------

def stats(values: list[float]) -> dict[str, float]:
    """Mean, standard deviation, min and max over the frames (NaN frames, which had no trusted pixels,
    are left out)."""
    v = np.array([x for x in values if not math.isnan(x)], np.float64)
    if v.size == 0:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan}
    with np.errstate(invalid="ignore"):  # infinite PSNR (identical frames) has no spread
        return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max())}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def summary(c: Comparison, *, picture: Path | None = None, plot: Path | None = None) -> dict:
    """The machine-readable summary; values that are not finite (the PSNR of identical frames) are null."""
    clips = {}
    for clip, measures in c.values.items():
        clips[clip] = {"path": str(c.paths[clip])}
        for key, per_frame in measures.items():
            s = {k: _finite(v) for k, v in stats(per_frame).items()}
            clips[clip][key] = {**s, "per_frame": [_finite(v) for v in per_frame]}
    return {"frames": c.frames, "warping_flow": c.flow_from, "a_enlarged": c.enlarged,
            "picture": str(picture) if picture else None, "picture_frame": c.shown_index,
            "plot": str(plot) if plot else None, "clips": clips}


def _fmt(key: str, x: float) -> str:
    if math.isnan(x):
        return "-"
    if math.isinf(x):
        return "inf"
    return {"psnr_y": f"{x:.2f}", "ssim_y": f"{x:.4f}", "tof": f"{x:.3f}"}.get(key, f"{x * 1000:.3f}")


def table(c: Comparison) -> str:
    """Means, per-frame spread (standard deviation, min-max) and B against A, one row per measure."""
    a = f"{c.paths['A'].name}, bicubic" if c.enlarged else c.paths["A"].name
    rows = [("measure", f"A ({a})", f"B ({c.paths['B'].name})", "B vs A")]
    for key, label, higher in METRICS:
        if key not in c.values["A"]:
            continue
        sa, sb = stats(c.values["A"][key]), stats(c.values["B"][key])
        cells = [f"{_fmt(key, s['mean'])} ± {_fmt(key, s['std'])} ({_fmt(key, s['min'])}-{_fmt(key, s['max'])})"
                 if math.isfinite(s["std"]) else _fmt(key, s["mean"]) for s in (sa, sb)]
        if key == "psnr_y":
            delta = f"{sb['mean'] - sa['mean']:+.2f} dB" if math.isfinite(sb["mean"] - sa["mean"]) else "-"
        else:
            change = (sb["mean"] - sa["mean"]) / sa["mean"] * 100 if sa["mean"] else math.nan
            delta = f"{change:+.1f}%" if math.isfinite(change) else "-"
        rows.append((f"{label} {'↑' if higher else '↓'}", *cells, delta))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    flow = {"reference": "the reference's", "input": "the input's", "own": "each clip's own"}[c.flow_from]
    lines.append(f"{c.frames} frames; mean ± sd (min-max) per frame; ↑ higher is better, ↓ lower. "
                 f"Warping error: MSE (RGB 0-1) against the previous frame moved by {flow} motion")
    if "reference" in c.values:
        ref = stats(c.values["reference"]["warping_error"])["mean"]
        lines.append(f"(the reference's own warping error: {_fmt('warping_error', ref)})")
    return "\n".join(lines)


def _text(img: np.ndarray, text: str, org: tuple[int, int], *, scale: float = 0.45, colour=(0, 0, 0),
          width: int | None = None) -> None:
    """Black text; shrunk (down to a limit) and then cut so that it fits in ``width`` pixels."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    if width is not None:
        while scale > 0.3 and cv2.getTextSize(text, font, scale, 1)[0][0] > width:
            scale -= 0.05
        while len(text) > 1 and cv2.getTextSize(text, font, scale, 1)[0][0] > width:
            text = text[:-1]
    cv2.putText(img, text, org, font, scale, colour, 1, cv2.LINE_AA)


def side_by_side(c: Comparison) -> np.ndarray:
    """The shown frame of A | B | reference, each under a label, 1:1 pixels, 4-pixel gaps."""
    clips = [k for k in ("A", "B", "reference") if k in c.shown]
    h, w = c.shown["A"].shape[:2]
    bar, gap = 22, 4
    out = np.full((h + bar, len(clips) * (w + gap) - gap, 3), 255, np.uint8)
    for i, k in enumerate(clips):
        x = i * (w + gap)
        out[bar:, x:x + w] = c.shown[k]
        name = f"{c.paths[k].name} enlarged (bicubic)" if k == "A" and c.enlarged else c.paths[k].name
        _text(out, f"{k}: {name} (frame {c.shown_index})", (x + 3, 16), width=w - 6)
    return out


def plot(c: Comparison, *, width: int = 800, panel: int = 190) -> np.ndarray:
    """One panel per measure, each clip a line over the frame numbers; drawn with OpenCV."""
    keys = [(k, label, higher) for k, label, higher in METRICS if k in c.values["A"]]
    left, right, top, bottom = 78, 16, 26, 24
    img = np.full((panel * len(keys), width, 3), 255, np.uint8)
    x_max = max(c.frames - 1, 1)
    for p, (key, label, higher) in enumerate(keys):
        y0 = p * panel
        clips = [k for k in ("A", "B", "reference") if key in c.values.get(k, {})]
        finite = [v for k in clips for _, v in c.series(k, key) if math.isfinite(v)]
        lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
        pad = (hi - lo) * 0.08 or max(abs(hi) * 0.05, 1e-6)
        lo, hi = lo - pad, hi + pad

        def x_of(f: float) -> float:  # frame number -> column
            return left + (width - left - right) * f / x_max

        def y_of(v: float, lo=lo, hi=hi, y0=y0) -> float:  # value -> row
            return y0 + top + (panel - top - bottom) * (hi - v) / (hi - lo)
        cv2.rectangle(img, (left, y0 + top), (width - right, y0 + panel - bottom), (160, 160, 160), 1)
        _text(img, f"{label} per frame ({'higher' if higher else 'lower'} is better)", (left, y0 + 17))
        for v in (hi - pad, (lo + hi) / 2, lo + pad):
            y = int(round(y_of(v)))
            cv2.line(img, (left - 4, y), (left, y), (160, 160, 160), 1)
            _text(img, _fmt(key, v), (4, y + 4), scale=0.4, width=left - 10)
        for f in sorted({0, x_max // 2, x_max}):
            x = int(round(x_of(f)))
            cv2.line(img, (x, y0 + panel - bottom), (x, y0 + panel - bottom + 4), (160, 160, 160), 1)
            _text(img, str(f), (x - 4, y0 + panel - 6), scale=0.4)
        for j, k in enumerate(clips):
            colour = COLOURS[k]
            pts = [(int(round(x_of(f))), int(round(y_of(v)))) if math.isfinite(v) else None
                   for f, v in c.series(k, key)]
            for a, b in zip(pts[:-1], pts[1:]):
                if a and b:
                    cv2.line(img, a, b, colour, 2, cv2.LINE_AA)
            for q in pts:
                if q:
                    cv2.circle(img, q, 2, colour, -1, cv2.LINE_AA)
            lx = width - right - 110 * (len(clips) - j)
            cv2.line(img, (lx, y0 + 12), (lx + 18, y0 + 12), colour, 2, cv2.LINE_AA)
            _text(img, k, (lx + 22, y0 + 17), scale=0.4)
    return img


def run(args: argparse.Namespace) -> int:
    """``vsr compare``: measure, write the picture and the plot, print the table (or the JSON summary)."""
    if args.output.exists() and not args.output.is_dir():
        raise VsrError(f"-o {args.output} is a file; give a folder for {PICTURE} and {PLOT}")
    c = compare(args.a, args.b, reference=args.reference, lowres=args.input, max_frames=args.max_frames)
    args.output.mkdir(parents=True, exist_ok=True)
    picture, plotted = args.output / PICTURE, args.output / PLOT
    write_image(picture, side_by_side(c))
    write_image(plotted, plot(c))
    if args.json:
        print(json.dumps(summary(c, picture=picture, plot=plotted)))
    else:
        print(table(c))
        print(f"vsr: written {picture} (frame {c.shown_index}) and {plotted}")
    return 0
