"""How each tape defect is measured and mended, on one frame and its neighbours (the stage that runs them
over a video is :mod:`vsr.video.repair`).

- chroma delay: in a small window around an edge, chroma is an affine function of luma when both are in
  place, so the shift that makes that fit best is the delay. Measured and undone on the frame's Y, U, V planes,
  before the conversion to RGB clips anything.
- dropouts: short horizontal streaks, far brighter or darker than the lines above and below, that the
  neighbouring frames (motion compensated) do not have at that place; filled from the neighbour that matches
  around the streak, else from the lines above and below.
- head-switching: the last lines of the picture, torn sideways and noisy: each moved back into line with the
  one above, its noise shrunk away.

RGB frames are (H, W, 3) uint8 or uint16.
"""
from __future__ import annotations

import av
import cv2
import numpy as np


# --- pictures ------------------------------------------------------------------------------------------

def peak(rgb: np.ndarray) -> float:
    return 65535.0 if rgb.dtype == np.uint16 else 255.0


def _luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W) float32 luma of an RGB frame, 0..255 whatever its depth."""
    f = rgb.astype(np.float32) * (255.0 / peak(rgb))
    return f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114


def _yuv444(frame: av.VideoFrame) -> av.VideoFrame:
    deep = max(c.bits for c in frame.format.components) > 8
    return frame.reformat(format="yuv444p16le" if deep else "yuv444p")


def yuv_planes(frame: av.VideoFrame) -> np.ndarray:
    """(H, W, 3) float32 Y, U, V of a decoded frame, chroma at full size, on a 0..255 scale (code values:
    nothing converted to RGB, so nothing clipped)."""
    f = _yuv444(frame)
    a = f.to_ndarray()
    a = a.transpose(1, 2, 0) if a.shape[0] == 3 and a.ndim == 3 and a.shape[-1] != 3 else a
    return a.astype(np.float32) * (255.0 / 65535.0 if a.dtype == np.uint16 else 1.0)


# --- chroma delay --------------------------------------------------------------------------------------

def _box(a: np.ndarray, k: int) -> np.ndarray:
    return cv2.boxFilter(a, -1, (k, k), normalize=True, borderType=cv2.BORDER_REFLECT)


def _shift(a: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``a`` moved right by dx and down by dy (cubic, edges reflected)."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(a, m, (a.shape[1], a.shape[0]), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def _windows(frames: list[np.ndarray], k: int = 8) -> list[tuple]:
    """What the chroma-delay fit needs of each frame, computed once: its planes smoothed (so that the
    smoothing a sub-pixel shift brings does not favour half-pixel shifts), luma's local mean and variance,
    and per axis (1: x, 0: y) and chroma plane the k x k windows to fit in: luma structure (std above 5
    levels), chroma structure within reach of it, and edges that a shift along that axis moves (a horizontal
    edge says nothing about a horizontal shift)."""
    out = []
    for f in frames:
        f = cv2.GaussianBlur(f, (0, 0), 1.0)
        y = f[..., 0]
        gx, gy = cv2.Sobel(y, cv2.CV_32F, 1, 0), cv2.Sobel(y, cv2.CV_32F, 0, 1)
        jxx, jyy = _box(gx * gx, k), _box(gy * gy, k)
        m_y = _box(y, k)
        v_y = _box(y * y, k) - m_y * m_y
        masks = {}
        for c in (1, 2):
            m_c = _box(f[..., c], k)
            near = (v_y > 25.0) & (cv2.dilate(_box(f[..., c] ** 2, k) - m_c * m_c, np.ones((3, 13), np.uint8)) > 4.0)
            masks[1, c], masks[0, c] = near & (3 * jxx > jyy), near & (3 * jyy > jxx)
        out.append((f, y, m_y, v_y, masks))
    return out


def _misfit(windows: list[tuple], shifts: list[tuple[float, float]], axis: int, k: int = 8) -> np.ndarray:
    """For each candidate (dx, dy): how badly chroma moved back by it fits an affine function of luma (1 - r^2
    of the fit, summed over the axis's windows and the frames)."""
    total = np.zeros(len(shifts))
    for f, y, m_y, v_y, masks in windows:
        for c in (1, 2):
            where = masks[axis, c]
            if not where.any():
                continue
            for i, (dx, dy) in enumerate(shifts):
                ch = _shift(f[..., c], -dx, -dy)
                m_c = _box(ch, k)
                v_c = _box(ch * ch, k) - m_c * m_c
                cov = _box(y * ch, k) - m_y * m_c
                r2 = np.minimum(cov * cov / (v_y * np.maximum(v_c, 0.0) + 1e-3), 1.0)  # float32 rounding: <= 1
                total[i] += float((1.0 - r2)[where].sum())
    return total


def _measurable(windows: list[tuple], axis: int) -> bool:
    """Whether enough of the picture (0.2%) has edges that a shift along ``axis`` moves."""
    n = sum(int(m[axis, c].sum()) for *_, m in windows for c in (1, 2))
    return n >= 0.002 * sum(w[1].size for w in windows)


def _best(windows: list[tuple], axis: int, around: float, reach: float, other: float,
          coarse: float | None = None) -> float:
    """Along one axis (1: x, 0: y; the other axis at ``other``): steps of ``coarse`` px over around +- reach,
    then steps of 0.1 px within 0.6 px of the best, then a parabola through the three best."""
    def at(values: np.ndarray) -> list[tuple[float, float]]:
        return [(float(v), other) if axis == 1 else (other, float(v)) for v in values]

    if coarse:
        steps = around + np.arange(-reach, reach + 1e-6, coarse)
        around = float(steps[int(np.argmin(_misfit(windows, at(steps), axis)))])
    fine = around + np.arange(-0.6, 0.6 + 1e-6, 0.1)
    cost = _misfit(windows, at(fine), axis)
    i = int(np.clip(np.argmin(cost), 1, len(fine) - 2))
    a, b, c = cost[i - 1], cost[i], cost[i + 1]
    step = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c > 0 else 0.0
    return round(float(fine[i] + np.clip(step, -1, 1) * 0.1), 2)


def measure_chroma_delay(frames: list[np.ndarray]) -> tuple[float, float] | None:
    """(dx, dy) in pixels: how far right and down the chroma sits against luma, over ``frames`` (from
    :func:`yuv_planes`: in YUV, where nothing is clipped yet); None when the frames have too few coloured
    edges across the lines to tell. Each axis is measured with the other's shift undone: x over +-6 px, y
    over +-2 lines (0 when the frames have too few edges along the lines), then x again near where it was."""
    w = _windows(frames)
    if not _measurable(w, 1):
        return None
    dx = _best(w, 1, 0.0, 6.0, 0.0, coarse=1.0)
    dy = _best(w, 0, 0.0, 2.0, dx, coarse=0.5) if _measurable(w, 0) else 0.0
    return _best(w, 1, dx, 0.0, dy), dy


def chroma_delay_certainty(frames: list[np.ndarray], delay: tuple[float, float]) -> tuple[float, float]:
    """How sharply ``delay`` is the best fit, per axis (x, y): the misfit 1 px either side of it over the misfit
    at it. Coloured edges give a clear minimum (1.05-1.2); chroma that is mostly noise, or too few edges across
    an axis, a shallow one (1.01-1.03). An axis without edges to measure counts as certain (its shift stays 0)."""
    w = _windows(frames)
    out = []
    for axis, step in ((1, (1.0, 0.0)), (0, (0.0, 1.0))):
        around = [delay, (delay[0] - step[0], delay[1] - step[1]), (delay[0] + step[0], delay[1] + step[1])]
        cost = _misfit(w, around, axis)
        out.append(float(cost[1:].mean() / cost[0]) if cost[0] > 0 else float("inf"))
    return out[0], out[1]


def undo_chroma_delay(frame: av.VideoFrame, delay: tuple[float, float]) -> av.VideoFrame:
    """The frame (as 4:4:4, same depth) with its chroma moved back by ``delay`` (dx, dy) px."""
    f = _yuv444(frame)
    a = f.to_ndarray()
    planar = a.shape[0] == 3 and a.shape[-1] != 3  # 8-bit comes as (3, H, W), 16-bit as (H, W, 3)
    planes = [a[c] if planar else a[..., c] for c in range(3)]
    top = 65535.0 if a.dtype == np.uint16 else 255.0
    for c in (1, 2):
        moved = _shift(planes[c].astype(np.float32), -delay[0], -delay[1])
        planes[c] = np.clip(moved + 0.5, 0, top).astype(a.dtype)
    out = av.VideoFrame.from_ndarray(np.stack(planes, axis=0 if planar else -1), format=f.format.name)
    out.colorspace, out.color_range = frame.colorspace, frame.color_range
    return out


# --- dropouts ------------------------------------------------------------------------------------------

def _vertical_median(y: np.ndarray, reach: int = 3) -> np.ndarray:
    """Each pixel's median over the 2 * reach + 1 lines around it: a streak of up to ``reach`` lines is not in it."""
    padded = np.pad(y, ((reach, reach), (0, 0)), mode="reflect")
    return np.median(np.stack([padded[i:i + y.shape[0]] for i in range(2 * reach + 1)]), axis=0)


def _runs(candidates: np.ndarray, min_length: int) -> np.ndarray:
    """(N, 3) rows of (line, first x, last x + 1): runs of candidate pixels along a line, at least
    ``min_length`` long (gaps of up to 4 px bridged). Each line on its own: what a taller shape leaves
    in the lines around it never joins a streak into something that is not one."""
    closed = cv2.morphologyEx(candidates.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((1, 5), np.uint8))
    apart = np.zeros((2 * closed.shape[0], closed.shape[1]), np.uint8)  # an empty line between lines
    apart[::2] = closed
    n, _, stats, _ = cv2.connectedComponentsWithStats(apart, connectivity=8)
    keep = stats[1:][stats[1:, cv2.CC_STAT_WIDTH] >= min_length]
    return np.stack([keep[:, cv2.CC_STAT_TOP] // 2, keep[:, cv2.CC_STAT_LEFT],
                     keep[:, cv2.CC_STAT_LEFT] + keep[:, cv2.CC_STAT_WIDTH]], axis=1)


def _mask(runs: np.ndarray, shape: tuple[int, ...], grow: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The pixels of ``runs``, grown by ``grow`` (lines, pixels) on each side."""
    mask = np.zeros(shape[:2], bool)
    for r, a, b in runs:
        mask[max(0, r - grow[0]):r + grow[0] + 1, max(0, a - grow[1]):b + grow[1]] = True
    return mask


def _aligned(ref: np.ndarray, other_y: np.ndarray, other: np.ndarray) -> np.ndarray:
    """``other`` (H, W, 3) warped onto ``ref`` (luma) by dense optical flow."""
    a = np.clip(ref, 0, 255).astype(np.uint8)
    b = np.clip(other_y, 0, 255).astype(np.uint8)
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(a, b, None)
    h, w = ref.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(other, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def dropout_threshold(y: np.ndarray) -> float:
    """Levels (0..255) a streak must stand out by: well above the picture's own line-to-line noise."""
    noise = float(np.median(np.abs(np.diff(y[::2], axis=0)))) * 1.48  # robust std of line differences
    return max(40.0, 8.0 * noise)


def _grown(weak: np.ndarray, a: int, b: int, gap: int = 4) -> tuple[int, int]:
    """The run [a, b) of a line grown over the ``weak`` pixels next to it (gaps of up to ``gap`` px bridged)."""
    while True:
        left = np.flatnonzero(weak[max(0, a - gap - 1):a])
        right = np.flatnonzero(weak[b:b + gap + 1])
        if not len(left) and not len(right):
            return a, b
        if len(left):
            a = max(0, a - gap - 1) + int(left[0])
        if len(right):
            b = b + int(right[-1]) + 1


def find_dropouts(cur: np.ndarray, neighbours: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Dropout pixels of ``cur`` (mask, grown to cover a streak's edges) and the neighbours aligned to it
    (empty when nothing stood out). A streak is a run along a line that stands out from the lines around it,
    differs on average from every aligned neighbour there by the same sign, is one or two lines tall, and
    the lines just above and below it agree with each other far better than with it (an edge, text or a
    thin shape of the picture does not)."""
    y = _luma(cur)
    h, w = y.shape
    t = dropout_threshold(y)
    median = _vertical_median(y)
    spatial = y - median
    candidates = np.abs(spatial) > t
    candidates[:4] = candidates[-4:] = False  # the median and the motion are unsure at the picture's edge
    runs = _runs(candidates, max(6, w // 72))  # 1 us of lost carrier is about 13 px at 720 wide
    if not len(runs) or not neighbours:  # a streak no neighbour can confirm is left alone (a thin line)
        return np.zeros((h, w), bool), []
    ref = np.where(_mask(runs, y.shape), median, y)  # the flow should follow the picture, not the streaks
    aligned = [_aligned(ref, _luma(nb), nb) for nb in neighbours]
    temporal = [y - _luma(a) for a in aligned]
    in_place = [y - _luma(nb) for nb in neighbours]  # the neighbours where they are, motion not compensated
    confirmed = np.zeros((h, w), np.uint8)
    for r, a, b in runs:  # on average over the run: noise inside a streak does not break it
        lift = float(spatial[r, a:b].mean())
        stands_out = all(abs(float(d[r, a:b].mean())) > t and np.sign(d[r, a:b].mean()) == np.sign(lift)
                         for d in temporal)
        # ... and the two neighbours agree there: they show the picture the streak hides (where the motion
        # is lost, on a moving person's thin details, they do not)
        agree = len(temporal) < 2 or float(np.abs(temporal[0][r, a:b] - temporal[1][r, a:b]).mean()) < abs(lift) / 2
        # ... and no neighbour has it in the same place (a still line of the picture, a sign's edge, that the
        # flow moved away where something passed in front of it)
        still = any(abs(float(d[r, a:b].mean())) < max(t / 2, abs(lift) / 3) for d in in_place)
        # ... and what they show there looks like the lines around the streak (a thin thing that moved, which
        # the flow did not follow, leaves something else there)
        hidden = all(float(np.abs(y - d - median)[r, a:b].mean()) < abs(lift) / 2 for d in temporal)
        if stands_out and agree and hidden and not still:
            confirmed[r, a:b] = 1
    n, _, stats, _ = cv2.connectedComponentsWithStats(confirmed, connectivity=8)
    streaks = []
    for x0, y0, bw, bh, _ in stats[1:]:
        if bh > 2:
            continue
        above, below, it = y[y0 - 1, x0:x0 + bw], y[y0 + bh, x0:x0 + bw], y[y0:y0 + bh, x0:x0 + bw].mean(axis=0)
        lift = float(np.mean(it - (above + below) / 2))
        if abs(lift) > t and float(np.mean(np.abs(above - below))) < abs(lift) / 2:
            weak = np.sign(lift) * spatial[y0:y0 + bh] > t / 2  # the streak's fainter ends and gaps belong to it
            streaks += [(r, *_grown(weak[r - y0], x0, x0 + bw)) for r in range(y0, y0 + bh)]
    # the whole streak, a line more above and below and two pixels more at each end
    return _mask(np.array(streaks, int).reshape(-1, 3), y.shape, grow=(1, 2)), aligned


def fill_dropouts(cur: np.ndarray, mask: np.ndarray, aligned: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """Each streak of ``mask`` filled from the aligned neighbour that matches ``cur`` best on the lines just
    around it, or from the lines above and below when none matches (a cut, the same dropout, no neighbour).
    Returns (frame, streaks filled)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    out = cur.copy()
    y = _luma(cur)
    h = cur.shape[0]
    for i in range(1, n):
        x0, y0, bw, bh = (int(stats[i, k]) for k in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH,
                                                         cv2.CC_STAT_HEIGHT))
        streak = labels[y0:y0 + bh, x0:x0 + bw] == i
        ring = np.zeros(mask.shape, bool)  # two lines above and below the streak
        ring[max(0, y0 - 2):y0, x0:x0 + bw] = True
        ring[y0 + bh:min(h, y0 + bh + 2), x0:x0 + bw] = True
        ring &= ~mask
        best, best_err = None, 12.0  # mean |luma difference| on the ring a usable neighbour stays under
        for a in aligned:
            err = float(np.abs(_luma(a)[ring] - y[ring]).mean()) if ring.any() else np.inf
            if err < best_err:
                best, best_err = a, err
        region = out[y0:y0 + bh, x0:x0 + bw]
        if best is not None:
            region[streak] = best[y0:y0 + bh, x0:x0 + bw][streak]
        else:  # between the line above the streak and the one below, by distance
            top, bottom = max(0, y0 - 1), min(h - 1, y0 + bh)
            above = cur[top, x0:x0 + bw].astype(np.float32)
            below = cur[bottom, x0:x0 + bw].astype(np.float32)
            for r in range(bh):
                wgt = (y0 + r - top) / max(1, bottom - top)
                line = (above * (1 - wgt) + below * wgt + 0.5).astype(cur.dtype)
                region[r][streak[r]] = line[streak[r]]
    return out, n - 1


# --- head switching ------------------------------------------------------------------------------------

def head_switching_band(lumas: list[np.ndarray]) -> int:
    """How many lines at the bottom of the picture are the head-switching band, over a sample of frames.

    Those lines are torn sideways and noisy: each differs from the line above it far more than lines in the
    picture do. Lines are tested upwards from the bottom; the band is the unbroken run of outliers."""
    if not lumas:
        return 0
    ratios = []
    for y in lumas:
        d = np.abs(np.diff(y, axis=0)).mean(axis=1)  # d[r]: line r+1 against line r
        ratios.append(d / (float(np.median(d)) + 1.0))
    ratio = np.median(np.stack(ratios), axis=0)
    limit = max(2, lumas[0].shape[0] // 24)  # the band is a few lines (about 6-10 of 480/576)
    rows = 0
    while rows < limit and ratio[-1 - rows] > 4.0:
        rows += 1
    return rows + 1 if rows >= 2 else 0  # +1: the first outlier compares the last clean line with the band


def _line_offset(line: np.ndarray, ref: np.ndarray, reach: int) -> int:
    """The shift (px) that best moves ``line`` onto ``ref`` (mean |difference| over the overlap); 0 unless a
    shift fits clearly better than none."""
    w = len(line)
    errs = {}
    for s in range(-reach, reach + 1):
        a, b = (line[s:], ref[:w - s]) if s >= 0 else (line[:w + s], ref[-s:])
        errs[s] = float(np.abs(a - b).mean())
    best = min(errs, key=errs.get)
    return best if errs[best] < 0.9 * errs[0] else 0


def repair_head_switching(rgb: np.ndarray, rows: int) -> np.ndarray:
    """The bottom ``rows`` lines (and a few above them, where the tear starts too faint to measure) moved
    back into line with the picture above, top to bottom; then what a line differs from the one above it by
    beyond what lines of the picture usually do (the band's noise) is shrunk away."""
    out = rgb.copy()
    h, w = rgb.shape[:2]
    y = _luma(rgb)
    band = min(h - 9, rows + rows // 2 + 2)
    # how much a line of the picture differs from the next, over the lines just above the band
    usual = float(np.mean([np.mean((y[r] - y[r - 1]) ** 2) for r in range(h - band - 8, h - band)]))
    reach = max(4, w // 16)
    for r in range(h - band, h):
        s = _line_offset(y[r], y[r - 1], reach)
        line, line_y = np.roll(out[r], -s, axis=0).astype(np.float32), np.roll(y[r], -s)
        if s:  # what came in at the edge: the line above there
            edge = slice(w - s, w) if s > 0 else slice(0, -s)
            line[edge], line_y[edge] = out[r - 1, edge], y[r - 1, edge]
        d = line_y - y[r - 1]
        keep = usual / (usual + max(0.0, float(np.mean(d * d)) - usual) + 1e-6)  # Wiener: picture vs noise
        line = out[r - 1].astype(np.float32) + keep * (line - out[r - 1].astype(np.float32))
        out[r] = np.clip(line + 0.5, 0, peak(rgb)).astype(rgb.dtype)
        y[r] = y[r - 1] + keep * d
    return out


# --- chroma noise --------------------------------------------------------------------------------------

def line_noise(plane: np.ndarray, flat: np.ndarray | None = None) -> float:
    """A plane's noise (std, its own levels) from the differences of each line with the next, where the
    picture is flat (``flat``: a mask of those places): VHS chroma noise is new on every line."""
    d = np.abs(np.diff(plane, axis=0))
    if flat is not None:
        d = d[flat[1:] & flat[:-1]]
    return float(np.median(d)) * 1.4826 / np.sqrt(2.0) if d.size else 0.0


def _flat(y: np.ndarray) -> np.ndarray:
    """Where luma has no edge (the picture's own chroma edges go with luma edges)."""
    g = np.abs(cv2.Sobel(y, cv2.CV_32F, 0, 1)) + np.abs(cv2.Sobel(y, cv2.CV_32F, 1, 0))
    return cv2.blur(g, (5, 5)) < 12.0


def chroma_noise_level(sample: list[np.ndarray]) -> float:
    """The chroma's noise (std, code levels on a 0..255 scale) over ``sample`` (from :func:`yuv_planes`):
    the median over the frames of the noisier of U and V, where luma is flat."""
    levels = [max(line_noise(f[..., c], _flat(f[..., 0])) for c in (1, 2)) for f in sample]
    return float(np.median(levels)) if levels else 0.0


def _ycc(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Luma, B - Y and R - Y (float32, 0..255 scale) of an RGB frame."""
    f = rgb.astype(np.float32) * (255.0 / peak(rgb))
    y = f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114
    return y, f[..., 2] - y, f[..., 0] - y


def denoise_chroma(cur: np.ndarray, neighbours: list[np.ndarray]) -> np.ndarray:
    """``cur`` with its chroma averaged with the neighbouring frames' (motion compensated), luma kept: each
    neighbour counts at a pixel as far as it shows the same thing there (its luma within a few levels, its
    colour within the chroma's own noise), so motion the flow missed and things that changed colour keep
    their own chroma."""
    y, u, v = _ycc(cur)
    sigma = max(1.0, line_noise(u, _flat(y)), line_noise(v, _flat(y)))  # this frame's chroma noise, B - Y levels
    su, sv, total = u.copy(), v.copy(), np.ones_like(y)
    for nb in neighbours:
        a = _aligned(y, _luma(nb), nb)
        ya, ua, va = _ycc(a)
        dy = cv2.blur(np.abs(y - ya), (3, 3))
        dc = cv2.blur(np.abs(u - ua) + np.abs(v - va), (3, 3)) / 2
        w = np.exp(-(dy / 4.0) ** 2 - (dc / (2.0 * sigma)) ** 2)
        su += w * ua
        sv += w * va
        total += w
    u, v = su / total, sv / total
    r, b = y + v, y + u
    g = (y - 0.299 * r - 0.114 * b) / 0.587
    top = peak(cur)
    out = np.stack([r, g, b], axis=-1) * (top / 255.0)
    return np.clip(out + 0.5, 0, top).astype(cur.dtype)
