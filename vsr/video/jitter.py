"""Line jitter (time-base error): a deck without a time-base corrector starts each line a little early or late,
so each line of the picture sits a little left or right of where it belongs (sub-pixel to a few pixels at 720
wide), by an amount that wanders from line to line and jumps now and then, differently in every field.

What is the picture's and what is the tape's: in one frame alone a line's sideways offset from the lines
around it cannot be told from a slanted edge, a diagonal or a curve of the picture. Across frames it can: the
picture moves smoothly (a pan, a tilt, people), while a line's jitter is new in every frame. So a frame's lines
are measured against the same lines of its neighbouring frames (two before and two after), moved onto it:

1. Motion. Dense optical flow (DIS) from the frame to each neighbour, on luma halved in size and smoothed
   over ten of the frame's lines, where the jitter largely averages out. What is left of it in the flow is
   kept out: the flow is an affine motion fitted robustly to the whole frame (a pan, a zoom, a rotation),
   corrected by a Lucas-Kanade fit of the two pictures, plus local motion, without the part of it that
   moves a whole row alike by up to half a pixel (jitter moves a whole line; a moving thing does not) and
   shrunk by half a pixel (smaller local motion is the flow's own error). The neighbour is warped onto the frame.
2. Line against line. Each line's sideways shift against the warped neighbour's same line, sub-pixel, by a
   Lucas-Kanade fit along the line, coarse to fine (lines quartered, halved, then at full width) so that
   offsets of several pixels are found. Pixels where the warped neighbour does not show the same thing on
   the vertically smoothed lines are left out; each line is fitted in eight segments and only those that
   agree count (a thing whose motion the flow missed moves a segment, not the whole line). This gives, per
   line, this frame's offset minus the neighbour's, and how sure that is.
3. Frames together. Each neighbour's own offset is unknown, but offsets average to zero over frames while
   the picture does not move with them: with N frames in all, the frame's offset is taken as the sum of its
   N - 1 differences over N (what the N frames have in common, including a slant of the picture, stays).
   What remains unmeasured is the mean offset of the N frames at that line: about 1/sqrt(N) of the jitter
   (N = 5: 0.45). That residue is the same in the N frames, so what is left after the repair wobbles far
   less from frame to frame than the jitter did. A frame before and the one as far after count alike on
   each line, so that what the flow missed of a motion (one way against the frame before, the other way
   against the frame after) cancels.
4. Lines together. Each line's value counts as much as the line is sure (its texture against its residual
   noise); a line with no texture takes its offset from the lines of the same field around it (a smooth
   fit over the lines of each field apart, since the two fields of a frame are read apart).

Offsets are in pixels, positive when the line sits to the right of where it belongs; :func:`undo_jitter`
moves each line back. Everything is deterministic (the same frames give bit-identical offsets, whatever
the number of threads).
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

JITTER_THRESHOLD = 0.25  # px: mean |offset| from which a clip has jitter worth undoing (clean: under 0.13)
MARGIN = 16  # px at the left and right of a line not used for measuring (warps and shifts bring edge pixels in)
LEAK = 0.5  # px: the most of a line's jitter the flow is taken to follow (a whole row moving by more is motion)
SHRINK = 0.5  # px: local motion smaller than this is taken for the flow's own error
SAME = (6.0, 2.5)  # a warped neighbour shows the same thing where it differs by less than this many levels plus
#                    this many pixels times the horizontal gradient (what a few pixels of jitter explain)
SEGMENTS = 8  # pieces of a line fitted apart (about 90 px at 720 wide)
ITERATIONS = ((4, 2), (2, 1), (1, 1))  # (width divided by, Lucas-Kanade steps) of each pass, coarse to fine
COARSE, FINE = cv2.INTER_LINEAR, cv2.INTER_CUBIC  # a line's shift in the coarse passes and in the last
WARP = cv2.INTER_LINEAR  # a neighbour moved onto the frame
SURE = 0.15  # px: a line's measurement with this standard error counts half
SMOOTHNESS = 0.05  # pull of a line's offset towards the lines of its field next to it


def luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W) float32 luma (BT.601 weights, 0..255) of an (H, W, 3) uint8 or uint16 RGB frame."""
    f = rgb.astype(np.float32) * (255.0 / (65535.0 if rgb.dtype == np.uint16 else 255.0))
    return f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """x and y coordinates of every pixel (float32, read-only: shared between calls)."""
    gx = np.broadcast_to(np.arange(w, dtype=np.float32)[None, :], (h, w)).copy()
    gy = np.broadcast_to(np.arange(h, dtype=np.float32)[:, None], (h, w)).copy()
    gx.flags.writeable = gy.flags.writeable = False
    return gx, gy


def _vsmooth(y: np.ndarray) -> np.ndarray:
    return cv2.blur(y, (1, 9), borderType=cv2.BORDER_REFLECT)


def _small(y: np.ndarray) -> np.ndarray:
    """Luma halved in size and smoothed over five of its lines (ten of the frame's: jitter largely averaged
    out), uint8: what the flow is computed on."""
    h, w = y.shape
    half = cv2.resize(y, (max(8, w // 2), max(8, h // 2)), interpolation=cv2.INTER_AREA)
    return np.clip(cv2.blur(half, (1, 5), borderType=cv2.BORDER_REFLECT) + 0.5, 0, 255).astype(np.uint8)


def _affine_at(p: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """p0 x + p1 y + p2: one component of an affine motion (a pan, a zoom, a rotation)."""
    return (x * np.float32(p[0]) + y * np.float32(p[1]) + np.float32(p[2])).astype(np.float32)


def _fit_affine(q: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The affine function of (x, y) closest to ``q`` (all raveled) where it fits: from the median (a plain
    pan), then fitted three times, each time to the points within three robust deviations of the last fit
    (not to things that move on their own, however far)."""
    basis = np.stack([x, y, np.ones_like(x)], 1).astype(np.float64)
    t = q.astype(np.float64)
    coef = np.array([0.0, 0.0, float(np.median(t))])
    for _ in range(3):
        err = np.abs(basis @ coef - t)
        keep = err <= max(0.25, 3.0 * 1.4826 * float(np.median(err)))
        if keep.sum() < 6:
            break
        b = basis[keep]
        coef = np.linalg.solve(b.T @ b + 1e-6 * np.eye(3), b.T @ t[keep])
    return coef


class _Centre:
    """What every neighbour of a frame is compared with, computed once: its luma, smoothed vertically, its
    horizontal gradient there, its :func:`_small` copy with what the affine fit needs, and its lines at a
    quarter and a half of their width."""

    def __init__(self, y: np.ndarray) -> None:
        h, w = y.shape
        self.y, self.ys, self.small = y, _vsmooth(y), _small(y)
        self.grad = np.abs(cv2.Sobel(self.ys, cv2.CV_32F, 1, 0, ksize=1, scale=0.5))
        self.widths = {f: cv2.resize(y, (max(8 * SEGMENTS, w // f), h), interpolation=cv2.INTER_AREA)
                       if f > 1 else y for f, _ in ITERATIONS}
        a = self.small.astype(np.float32)
        sh, sw = a.shape
        gx, gy = _grid(sh, sw)
        sub = (slice(4, sh - 4, 3), slice(4, sw - 4, 3))  # the points the affine correction is fitted on
        self.sub = sub
        self.sx, self.sy, self.sa = gx[sub].ravel(), gy[sub].ravel(), a[sub].ravel()
        ax = cv2.Sobel(a, cv2.CV_32F, 1, 0, ksize=1, scale=0.5)[sub].ravel()
        ay = cv2.Sobel(a, cv2.CV_32F, 0, 1, ksize=1, scale=0.5)[sub].ravel()
        self.jac = np.stack([ax * self.sx, ax * self.sy, ax, ay * self.sx, ay * self.sy, ay], 1)


def _refine(c: _Centre, b: np.ndarray, su: np.ndarray, sv: np.ndarray, steps: int = 2) -> np.ndarray:
    """An affine correction (6 parameters: u's then v's) to the flow from ``c``'s small copy to ``b``, which
    is (su, sv) at ``c``'s sample points, fitted directly to the pictures (Lucas-Kanade over the whole frame:
    the flow's small errors of place, which a line's shift would take for jitter), without the pixels that
    do not match."""
    h, w = b.shape
    bf = b.astype(np.float32)
    total = np.zeros(6)
    for _ in range(steps):
        mx = c.sx + su + _affine_at(total[:3], c.sx, c.sy)
        my = c.sy + sv + _affine_at(total[3:], c.sx, c.sy)
        warped = cv2.remap(bf, mx[None], my[None], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[0]
        e = warped - c.sa
        inside = (mx >= 1) & (mx <= w - 2) & (my >= 1) & (my <= h - 2)
        if inside.sum() < 12:
            break
        ok = inside & (np.abs(e) <= 3.0 * np.median(np.abs(e[inside])) + 2.0)
        j = c.jac[ok].astype(np.float64)
        total -= np.linalg.solve(j.T @ j + 1e-3 * np.eye(6), j.T @ e[ok].astype(np.float64))
    return total


def _motion(c: _Centre, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(map_x, map_y) at full size: where each pixel of the frame ``c`` is in the frame whose :func:`_small`
    is ``b``, without the lines' own sideways jitter."""
    h, w = c.y.shape
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST).calc(c.small, b, None)
    sh, sw = flow.shape[:2]
    q = cv2.resize(flow, (max(2, sw // 4), max(2, sh // 4)), interpolation=cv2.INTER_AREA)  # quarter size
    qh, qw = q.shape[:2]
    qx, qy = (g * np.float32(k) + np.float32((k - 1) / 2) for g, k in zip(_grid(qh, qw), (sw / qw, sh / qh)))
    pu, pv = (_fit_affine(q[..., i].ravel(), qx.ravel(), qy.ravel()) for i in (0, 1))
    gx, gy = _grid(sh, sw)
    lu, lv = flow[..., 0] - _affine_at(pu, gx, gy), flow[..., 1] - _affine_at(pv, gx, gy)
    # a whole line moved by up to a pixel or so: jitter (what the flow could not smooth away), not motion
    lu -= np.clip(np.median(lu[:, ::4], axis=1, keepdims=True), -LEAK * sw / w, LEAK * sw / w)
    lu, lv = (cv2.GaussianBlur(m, (0, 0), 1.5) for m in (lu, lv))
    lu, lv = (np.sign(m) * np.maximum(np.abs(m) - SHRINK * sw / w, 0) for m in (lu, lv))
    # the local motion at the sample points of the affine correction (in small-copy pixels)
    su = _affine_at(pu, c.sx, c.sy) + lu[c.sub].ravel()
    sv = _affine_at(pv, c.sx, c.sy) + lv[c.sub].ravel()
    pu, pv = pu + (corr := _refine(c, b, su, sv))[:3], pv + corr[3:]
    # full size: a pixel x of the frame is at (x + 0.5) * sw / w - 0.5 in the small copy, whose flow is in its
    # own pixels; the affine part is a sum of a row and a column
    ku, kv = np.float32(w / sw), np.float32(h / sh)
    fx = (np.arange(w, dtype=np.float32) + 0.5) * np.float32(sw / w) - 0.5
    fy = (np.arange(h, dtype=np.float32) + 0.5) * np.float32(sh / h) - 0.5
    map_x = cv2.resize(lu * ku, (w, h), interpolation=cv2.INTER_LINEAR)
    map_x += (np.arange(w, dtype=np.float32) + ku * np.float32(pu[0]) * fx)[None, :]
    map_x += (ku * (np.float32(pu[1]) * fy + np.float32(pu[2])))[:, None]
    map_y = cv2.resize(lv * kv, (w, h), interpolation=cv2.INTER_LINEAR)
    map_y += (kv * np.float32(pv[0]) * fx)[None, :]
    map_y += (np.arange(h, dtype=np.float32) + kv * (np.float32(pv[1]) * fy + np.float32(pv[2])))[:, None]
    return map_x, map_y


def _shift_rows(a: np.ndarray, d: np.ndarray, how: int = cv2.INTER_CUBIC) -> np.ndarray:
    """``a`` with row r read at x + d[r] (moved left by d[r]), edge pixels repeated."""
    gx, gy = _grid(*a.shape)
    return cv2.remap(a, gx + d.astype(np.float32)[:, None], gy, how, borderMode=cv2.BORDER_REPLICATE)


def _robust_step(num: np.ndarray, den: np.ndarray, tol: float, textured: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row, from its segments' Lucas-Kanade sums (num, den: (H, S)): the step of the segments that agree
    (within ``tol`` of the median of the segments' own steps), and which segments those are. A whole line
    moved by jitter moves in every segment alike; a thing whose motion the flow missed does not. In the
    median every segment with texture (``den`` above ``textured``) counts about alike, so that a small,
    busy thing does not outvote the rest of the line."""
    own = -num / den
    order = np.argsort(own, axis=1, kind="stable")
    sorted_own = np.take_along_axis(own, order, 1)
    cum = np.cumsum(np.take_along_axis(den / (den + textured), order, 1), axis=1)
    k = (cum < cum[:, -1:] / 2).sum(axis=1, keepdims=True)
    median = np.take_along_axis(sorted_own, np.minimum(k, own.shape[1] - 1), 1)
    agree = np.abs(own - median) <= tol
    return -(num * agree).sum(axis=1) / (den * agree).sum(axis=1), agree


def _line_shifts(c: _Centre, ref: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: d with y(x + d) = ref(x) (sub-pixel), and the variance of that measurement (px^2).
    Coarse to fine: rows shrunk to a quarter and a half of their width first, for shifts of several pixels.
    Each row is fitted in SEGMENTS pieces, and only the pieces that agree count."""
    h, w = c.y.shape
    d = np.zeros(h, np.float32)
    for f, iters in ITERATIONS:
        size = (max(8 * SEGMENTS, w // f), h)
        ys = c.widths[f]
        rs = cv2.resize(ref, size, interpolation=cv2.INTER_AREA) if f > 1 else ref
        ok = (cv2.resize(valid.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0) if f > 1 else valid
        g = cv2.Sobel(rs, cv2.CV_32F, 1, 0, ksize=1, scale=0.5)  # central difference
        gm = np.where(ok, g, 0).astype(np.float32)
        cuts = np.linspace(0, size[0], SEGMENTS + 1).astype(int)[:-1]
        den = np.add.reduceat(gm * gm, cuts, axis=1) + 1e-3
        textured = 4.0 * size[0] / SEGMENTS  # a segment's gradient of about 2 levels a pixel: noise
        for _ in range(iters):
            e = _shift_rows(ys, d / f, COARSE if f > 1 else FINE) - rs
            step, agree = _robust_step(np.add.reduceat(gm * e, cuts, axis=1), den, 0.5 / f, textured)
            d += np.clip(step, -1.5, 1.5) * f
    # the measurement's variance: the residual's (what no shift explains, as of the last step) over the
    # texture, of the segments that agree; a row whose segments mostly disagree is not measured
    inside = (den * agree).sum(axis=1)
    share = inside / den.sum(axis=1)
    n = (np.add.reduceat(ok.astype(np.float32), cuts, axis=1) * agree).sum(axis=1)
    noise = (np.add.reduceat(np.where(ok, e, 0) ** 2, cuts, axis=1) * agree).sum(axis=1) / np.maximum(n, 1)
    var = np.where((n > w // 8) & (share >= 0.5), (noise + 1.0) / inside / share ** 2, np.inf)
    return d, var.astype(np.float32)


def _tridiagonal(lower: np.ndarray, diag: np.ndarray, upper: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """x with lower[i] x[i-1] + diag[i] x[i] + upper[i] x[i+1] = rhs[i] (Thomas' algorithm; the system here is
    diagonally dominant, so it needs no pivoting)."""
    n = len(diag)
    c, d = np.zeros(n), np.zeros(n)
    c[0], d[0] = upper[0] / diag[0], rhs[0] / diag[0]
    for i in range(1, n):
        m = diag[i] - lower[i] * c[i - 1]
        c[i], d[i] = upper[i] / m, (rhs[i] - lower[i] * d[i - 1]) / m
    x = np.zeros(n)
    x[-1] = d[-1]
    for i in range(n - 2, -1, -1):
        x[i] = d[i] - c[i] * x[i + 1]
    return x


def _regularise(value: np.ndarray, sure: np.ndarray) -> np.ndarray:
    """Per field (even and odd lines apart): offsets close to ``value`` where ``sure`` (0..1) is high, taken
    from the lines around where it is low: minimises sum sure (o - value)^2 + SMOOTHNESS sum (o_r - o_r+1)^2
    (+ a tiny pull to zero, for a field with nothing sure in it)."""
    out = np.zeros(len(value))
    for p in (0, 1):
        c, v = sure[p::2].astype(np.float64), value[p::2].astype(np.float64)
        n = len(c)
        if n == 0:
            continue
        off = np.full(n, -SMOOTHNESS)
        diag = c + 1e-4 + 2 * SMOOTHNESS
        diag[0] -= SMOOTHNESS
        diag[-1] -= SMOOTHNESS
        off_lo, off_hi = off.copy(), off.copy()
        off_lo[0] = off_hi[-1] = 0.0
        out[p::2] = _tridiagonal(off_lo, diag, off_hi, c * v)
    return out.astype(np.float32)


def measure_jitter(y: np.ndarray, neighbours: list[np.ndarray], before: int | None = None) -> np.ndarray:
    """(H,) float32 per-line offsets (px, positive: the line sits to the right of where it belongs) of the
    frame with luma ``y`` (H, W float, 0..255, e.g. :func:`luma`), measured against ``neighbours``: the luma
    of the frames around it, in time order, the first ``before`` of them (default: half) before the frame.
    Two before and two after is the design point; fewer measure less of the jitter. At a clip's ends, pass
    what there is (``before`` 0: all after). Without neighbours nothing can be told: all zeros.

    A frame before and the one as far after it are taken as a pair, and a line counts from both alike (by
    the geometric mean of how sure each is: nothing where either is unsure): what the flow missed of a
    thing's motion shifts a line one way against the frame before and the other way against the frame
    after, and cancels out only when both count alike."""
    h, w = y.shape
    y = np.ascontiguousarray(y, dtype=np.float32)
    if any(nb.shape != y.shape for nb in neighbours):
        raise ValueError(f"neighbours must be {h}x{w} luma like the frame")
    if not neighbours or w < 4 * MARGIN:
        return np.zeros(h, np.float32)
    c = _Centre(y)
    diffs, sures = [], []
    for nb in neighbours:
        nb = np.ascontiguousarray(nb, dtype=np.float32)
        mx, my = _motion(c, _small(nb))
        ref = cv2.remap(nb, mx, my, WARP, borderMode=cv2.BORDER_REPLICATE)
        inside = (mx >= 2) & (mx <= w - 3) & (my >= 1) & (my <= h - 2)
        # the same thing there: on lines smoothed vertically (jitter averaged), within what a few pixels of
        # sideways offset explain
        same = np.abs(_vsmooth(ref) - c.ys) <= SAME[0] + SAME[1] * c.grad
        valid = inside & same
        valid[:, :MARGIN] = valid[:, -MARGIN:] = False
        d, var = _line_shifts(c, ref, valid)
        diffs.append(d)
        sures.append(1.0 / (1.0 + var / SURE ** 2))
    n = len(neighbours)
    before = n // 2 if before is None else before
    for i in range(min(before, n - before)):  # the frame i places before it with the one as far after it
        a, b = before - 1 - i, before + i
        sures[a] = sures[b] = np.sqrt(sures[a] * sures[b])
    d, s = np.stack(diffs), np.stack(sures)
    # offsets average to zero over the frames: this frame's is the sum of its differences over N (weighted)
    value = (s * d).sum(axis=0) / (s.sum(axis=0) + s.mean(axis=0) + 1e-9)
    return _regularise(value, s.mean(axis=0))


def undo_jitter(rgb: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 or uint16 RGB with line r moved left by offsets[r] px (sub-pixel, cubic; the edge pixel
    repeated where the line comes in)."""
    gx, gy = _grid(*rgb.shape[:2])
    return cv2.remap(rgb, gx + np.asarray(offsets, np.float32)[:, None], gy, cv2.INTER_CUBIC,
                     borderMode=cv2.BORDER_REPLICATE)


def jitter_amount(runs: list[list[np.ndarray]]) -> float:
    """Mean |offset| (px) of a clip's lines, over a sample of it: ``runs`` of consecutive frames' luma (five is
    the design point: the middle one is measured against the others); the median over the runs, since a
    tape's jitter is in all of them and what a few hard moments (fast motion the flow misses, a camera's
    rolling shutter shaken) add is not. The bottom 1/24 of the picture (where a head-switching band would
    be) and the top two lines are left out."""
    values = []
    for run in runs:
        if len(run) < 2:
            continue
        mid = len(run) // 2
        o = measure_jitter(run[mid], run[:mid] + run[mid + 1:], before=mid)
        h = len(o)
        values.append(float(np.abs(o[2:h - max(1, h // 24)]).mean()))
    return float(np.median(values)) if values else 0.0


def detect_jitter(runs: list[list[np.ndarray]]) -> float | None:
    """The clip's mean |offset| (px, two decimals) when it has jitter worth undoing (at least
    :data:`JITTER_THRESHOLD`), else None: what a report's ``jitter_px`` says."""
    amount = jitter_amount(runs)
    return round(amount, 2) if amount >= JITTER_THRESHOLD else None
