"""Line jitter (time-base error): a deck without a time-base corrector starts each line a little early or late,
so each line of the picture sits a little left or right of where it belongs (sub-pixel to a few pixels at 720
wide), by an amount that wanders from line to line and jumps now and then, differently in every field.

What is the picture's and what is the tape's: in one frame alone a line's sideways offset from the lines
around it cannot be told from a slanted edge, a diagonal or a curve of the picture. Across frames it can: the
picture moves smoothly (a pan, a tilt, people), while a line's jitter is new in every frame. So a frame's lines
are measured against the same lines of its neighbouring frames, moved onto it:

1. Motion. Dense optical flow (DIS) from the frame to each neighbour, on luma smoothed vertically over nine
   lines and halved in size, where the jitter largely averages out. What is left of it in the flow is
   removed: the flow's horizontal part is an affine motion fitted to the whole frame (a pan, a zoom, a
   rotation) plus local motion with its median along each row taken out, because jitter moves a whole line
   and a moving thing does not. The neighbour is warped onto the frame with that motion.
2. Line against line. Each line's sideways shift against the warped neighbour's same line, sub-pixel, by a
   Lucas-Kanade fit along the line, coarse to fine (lines quartered, halved, then at full width) so that
   offsets of several pixels are found; pixels where the warped neighbour does not show the same thing
   (something moving the flow missed, the frame's edges) are left out. This gives, per line, this frame's
   offset minus the neighbour's.
3. Frames together. Each neighbour's own offset is unknown, but offsets average to zero over frames while
   the picture does not move with them: with N frames in all, the frame's offset is taken as the sum of its
   N - 1 differences over N (what the N frames have in common, including a slant of the picture, stays).
   What remains unmeasured is the mean offset of the N frames at that line: about 1/sqrt(N) of the jitter
   (N = 5, two frames either side: 0.45). That residue is the same in the N frames, so what is left after
   the repair wobbles far less from frame to frame than the jitter did.
4. Lines together. Each line's value counts as much as the line is sure (its texture against its residual
   noise); a line with no texture takes its offset from the lines of the same field around it (a smooth
   fit over the lines of each field apart, since the two fields of a frame are read apart).

Offsets are in pixels, positive when the line sits to the right of where it belongs; :func:`undo_jitter`
moves each line back. Everything is deterministic (the same frames give bit-identical offsets).
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
from scipy.linalg import solve_banded

JITTER_THRESHOLD = 0.25  # px: mean |offset| above which a clip has jitter worth undoing
MARGIN = 16  # px at the left and right of a line not used for measuring (warps and shifts bring edge pixels in)
SURE = 0.15  # px: a line's measurement with this standard error counts half
SMOOTHNESS = 0.05
WARP = cv2.INTER_LINEAR
LEAK = 1.0  # px: the most of a line's jitter the flow is taken to follow
SAME = (6.0, 2.5)  # levels, px: a warped neighbour shows the same thing where it differs by less than
#   the first plus the second times the horizontal gradient (what a few pixels of jitter explain)
SHRINK = 0.25  # px: local motion smaller than this is taken for the flow's own error
SEGMENTS = 8  # pieces of a line fitted apart (about 90 px at 720 wide)
ITERATIONS = ((4, 2), (2, 1), (1, 1))  # (width divided by, Lucas-Kanade steps) of each pass, coarse to fine  # pull of a line's offset towards the lines of its field next to it


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
    """Luma halved in size and smoothed over about nine of its lines (jitter largely averaged out), uint8:
    what the flow is computed on."""
    h, w = y.shape
    half = cv2.resize(y, (max(8, w // 2), max(8, h // 2)), interpolation=cv2.INTER_AREA)
    return np.clip(cv2.blur(half, (1, 5), borderType=cv2.BORDER_REFLECT) + 0.5, 0, 255).astype(np.uint8)


def _affine(c: np.ndarray) -> np.ndarray:
    """``c`` (a flow component) as an affine function of x and y, fitted on a quarter-size copy twice: the
    second time without the worst-fitting tenth (things that move on their own)."""
    h, w = c.shape
    q = cv2.resize(c, (max(2, w // 4), max(2, h // 4)), interpolation=cv2.INTER_AREA)
    qy, qx = np.indices(q.shape, dtype=np.float64)
    basis = np.stack([(qx.ravel() + 0.5) * (w / q.shape[1]) - 0.5, (qy.ravel() + 0.5) * (h / q.shape[0]) - 0.5,
                      np.ones(q.size)], 1)
    t = q.ravel().astype(np.float64)
    keep = np.ones(len(t), bool)
    for _ in range(2):
        b = basis[keep]
        coef = np.linalg.solve(b.T @ b + 1e-6 * np.eye(3), b.T @ t[keep])
        err = np.abs(basis @ coef - t)
        keep = err <= np.quantile(err, 0.9)
    gx, gy = _grid(h, w)
    return (gx * coef[0] + gy * coef[1] + coef[2]).astype(np.float32)


def _refine(a: np.ndarray, b: np.ndarray, u: np.ndarray, v: np.ndarray, steps: int = 2
            ) -> tuple[np.ndarray, np.ndarray]:
    """The flow (u, v) from ``a`` to ``b`` with an affine correction fitted directly to the pictures
    (Lucas-Kanade over the whole frame: the flow's small errors of place, which a line's shift would take for
    jitter), leaving out pixels that do not match."""
    h, w = a.shape
    gx, gy = _grid(h, w)
    af, bf = a.astype(np.float32), b.astype(np.float32)
    ax = cv2.Sobel(af, cv2.CV_32F, 1, 0, ksize=1, scale=0.5)
    ay = cv2.Sobel(af, cv2.CV_32F, 0, 1, ksize=1, scale=0.5)
    sub = (slice(4, h - 4, 2), slice(4, w - 4, 2))
    x, y = gx[sub].ravel().astype(np.float64), gy[sub].ravel().astype(np.float64)
    jx, jy = ax[sub].ravel().astype(np.float64), ay[sub].ravel().astype(np.float64)
    jac = np.stack([jx * x, jx * y, jx, jy * x, jy * y, jy], 1)
    for _ in range(steps):
        warped = cv2.remap(bf, gx + u, gy + v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        e = (warped - af)[sub].ravel().astype(np.float64)
        inside = ((gx + u >= 1) & (gx + u <= w - 2) & (gy + v >= 1) & (gy + v <= h - 2))[sub].ravel()
        ok = inside & (np.abs(e) <= 3.0 * np.median(np.abs(e[inside])) + 2.0 if inside.any() else inside)
        j = jac[ok]
        delta = -np.linalg.solve(j.T @ j + 1e-3 * np.eye(6), j.T @ e[ok])
        u = u + (gx * delta[0] + gy * delta[1] + delta[2]).astype(np.float32)
        v = v + (gx * delta[3] + gy * delta[4] + delta[5]).astype(np.float32)
    return u, v


def _motion(a: np.ndarray, b: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(map_x, map_y) at full size ``shape``: where each pixel of the frame whose :func:`_small` is ``a`` is in
    the frame whose :func:`_small` is ``b``, without the lines' own sideways jitter."""
    h, w = shape
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST).calc(a, b, None)
    sh, sw = flow.shape[:2]
    u, v = flow[..., 0], flow[..., 1]
    au, av = _affine(u), _affine(v)  # a pan, a zoom, a rotation
    lu = u - au
    # a whole line moved by up to a pixel or so: jitter (what the flow could not smooth away), not motion
    lu -= np.clip(np.median(lu, axis=1, keepdims=True), -LEAK * sw / w, LEAK * sw / w)
    lu, lv = (cv2.GaussianBlur(c, (0, 0), 4.0) for c in (lu, v - av))
    lu, lv = (np.sign(c) * np.maximum(np.abs(c) - SHRINK, 0) for c in (lu, lv))
    fu, fv = _refine(a, b, au + lu, av + lv)
    fu = cv2.resize(fu, (w, h), interpolation=cv2.INTER_LINEAR) * (w / sw)
    fv = cv2.resize(fv, (w, h), interpolation=cv2.INTER_LINEAR) * (h / sh)
    gx, gy = _grid(h, w)
    return gx + fu, gy + fv


def _shift_rows(a: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``a`` with row r read at x + d[r] (moved left by d[r]), edge pixels repeated."""
    gx, gy = _grid(*a.shape)
    return cv2.remap(a, gx + d.astype(np.float32)[:, None], gy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def _robust_step(num: np.ndarray, den: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row, from its segments' Lucas-Kanade sums (num, den: (H, S)): the step of the segments that agree
    (within ``tol`` of the weighted median of the segments' own steps), and which segments those are. A whole
    line moved by jitter moves in every segment alike; a thing whose motion the flow missed does not."""
    own = -num / den
    order = np.argsort(own, axis=1, kind="stable")
    sorted_own = np.take_along_axis(own, order, 1)
    cum = np.cumsum(np.take_along_axis(den, order, 1), axis=1)
    k = (cum < cum[:, -1:] / 2).sum(axis=1, keepdims=True)
    median = np.take_along_axis(sorted_own, np.minimum(k, own.shape[1] - 1), 1)
    agree = np.abs(own - median) <= tol
    return -(num * agree).sum(axis=1) / (den * agree).sum(axis=1), agree


def _line_shifts(y: np.ndarray, ref: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: d with y(x + d) = ref(x) (sub-pixel), and the variance of that measurement (px^2).
    Coarse to fine: rows shrunk to a quarter and a half of their width first, for shifts of several pixels.
    Each row is fitted in SEGMENTS pieces, and only the pieces that agree count."""
    h, w = y.shape
    d = np.zeros(h, np.float32)
    for f, iters in ITERATIONS:
        size = (max(8 * SEGMENTS, w // f), h)
        ys = cv2.resize(y, size, interpolation=cv2.INTER_AREA) if f > 1 else y
        rs = cv2.resize(ref, size, interpolation=cv2.INTER_AREA) if f > 1 else ref
        ok = (cv2.resize(valid.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0) if f > 1 else valid
        g = cv2.Sobel(rs, cv2.CV_32F, 1, 0, ksize=1, scale=0.5)  # central difference
        gm = np.where(ok, g, 0).astype(np.float32)
        cuts = np.linspace(0, size[0], SEGMENTS + 1).astype(int)[:-1]
        den = np.add.reduceat(gm * gm, cuts, axis=1) + 1e-3
        for _ in range(iters):
            e = _shift_rows(ys, d / f) - rs
            step, agree = _robust_step(np.add.reduceat(gm * e, cuts, axis=1), den, 0.5 / f)
            d += np.clip(step, -1.5, 1.5) * f
    # the measurement's variance: the residual's (what no shift explains, as of the last step) over the
    # texture, of the segments that agree; a row whose segments mostly disagree is not measured
    inside = (den * agree).sum(axis=1)
    share = inside / den.sum(axis=1)
    n = (np.add.reduceat(ok.astype(np.float32), cuts, axis=1) * agree).sum(axis=1)
    noise = (np.add.reduceat(np.where(ok, e, 0) ** 2, cuts, axis=1) * agree).sum(axis=1) / np.maximum(n, 1)
    var = np.where((n > w // 8) & (share >= 0.5), (noise + 1.0) / inside / share ** 2, np.inf)
    return d, var.astype(np.float32)


def _regularise(value: np.ndarray, sure: np.ndarray) -> np.ndarray:
    """Per field (even and odd lines apart): offsets close to ``value`` where ``sure`` (0..1) is high, taken
    from the lines around where it is low: minimises sum sure (o - value)^2 + SMOOTHNESS sum (o_r - o_r+1)^2
    (+ a tiny pull to zero, for a field with nothing sure in it)."""
    out = np.zeros_like(value, dtype=np.float64)
    for p in (0, 1):
        c, v = sure[p::2].astype(np.float64), value[p::2].astype(np.float64)
        n = len(c)
        if n == 0:
            continue
        ab = np.zeros((3, n))
        ab[1] = c + 1e-4 + 2 * SMOOTHNESS
        ab[1, 0] -= SMOOTHNESS
        ab[1, -1] -= SMOOTHNESS
        ab[0, 1:] = -SMOOTHNESS
        ab[2, :-1] = -SMOOTHNESS
        out[p::2] = solve_banded((1, 1), ab, c * v) if n > 1 else c * v / (c + 1e-4)
    return out.astype(np.float32)


def measure_jitter(y: np.ndarray, neighbours: list[np.ndarray]) -> np.ndarray:
    """(H,) float32 per-line offsets (px, positive: the line sits to the right of where it belongs) of the
    frame with luma ``y`` (H, W float, 0..255, e.g. :func:`luma`), measured against ``neighbours``: the luma
    of the frames around it (two before and two after is the design point; fewer measure less of the jitter,
    in any order). Without neighbours nothing can be told from the picture: all zeros."""
    h, w = y.shape
    y = np.ascontiguousarray(y, dtype=np.float32)
    if not neighbours or w < 4 * MARGIN:
        return np.zeros(h, np.float32)
    ys, small = _vsmooth(y), _small(y)
    grad = np.abs(cv2.Sobel(ys, cv2.CV_32F, 1, 0, ksize=1, scale=0.5))
    diffs, sures = [], []
    for nb in neighbours:
        nb = np.ascontiguousarray(nb, dtype=np.float32)
        mx, my = _motion(small, _small(nb), (h, w))
        ref = cv2.remap(nb, mx, my, WARP, borderMode=cv2.BORDER_REPLICATE)
        inside = (mx >= 2) & (mx <= w - 3) & (my >= 1) & (my <= h - 2)
        # the same thing there: on lines smoothed vertically (jitter averaged), within what a few pixels of
        # sideways offset explain
        same = np.abs(_vsmooth(ref) - ys) <= SAME[0] + SAME[1] * grad
        valid = inside & same
        valid[:, :MARGIN] = valid[:, -MARGIN:] = False
        d, var = _line_shifts(y, ref, valid)
        diffs.append(d)
        sures.append(1.0 / (1.0 + var / SURE ** 2))
    d, s = np.stack(diffs), np.stack(sures)
    # offsets average to zero over the frames: this frame's is the sum of its differences over N (weighted)
    value = (s * d).sum(axis=0) / (s.sum(axis=0) + s.mean(axis=0) + 1e-9)
    return _regularise(value, s.mean(axis=0))


def undo_jitter(rgb: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 or uint16 RGB with line r moved left by offsets[r] px (sub-pixel, cubic; the edge pixel
    repeated where the line comes in)."""
    gx, gy = _grid(*rgb.shape[:2])
    return cv2.remap(rgb, gx + np.asarray(offsets, np.float32)[:, None], gy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


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
        o = measure_jitter(run[mid], run[:mid] + run[mid + 1:])
        h = len(o)
        values.append(float(np.abs(o[2:h - max(1, h // 24)]).mean()))
    return float(np.median(values)) if values else 0.0


def detect_jitter(runs: list[list[np.ndarray]]) -> float | None:
    """The clip's mean |offset| (px, two decimals) when it has jitter worth undoing (at least
    :data:`JITTER_THRESHOLD`), else None: what a report's ``jitter_px`` says."""
    amount = jitter_amount(runs)
    return round(amount, 2) if amount >= JITTER_THRESHOLD else None
