"""User-facing encode options and the archival-quality defaults behind them."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction

import av

from vsr.errors import VsrError
from vsr.video.ingest import IngestOptions

ProgressFn = Callable[[int, "int | None"], None]  # (frames done, frames expected or None)


@dataclass(frozen=True, kw_only=True)
class VideoOptions:
    """How to encode the restored video. Every field has an archival-quality default.

    codec: PyAV encoder name. Defaults per codec (used when crf/preset/pix_fmt are None):
        libx264   crf 16, preset slow (veryfast for a network on the CPU: for_cpu), yuv420p (yuv420p10le for
                  >8-bit input)  - visually lossless H.264
        libx265   crf 18, preset slow, yuv420p (yuv420p10le for >8-bit input)
        libsvtav1 crf 20, preset 6,    yuv420p (yuv420p10le for >8-bit input)
        ffv1      lossless, level 3, slice CRCs, intra-only, yuv420p / yuv420p10le  - archival master
        prores_ks profile HQ, yuv422p10le                                          - editing master
    crf: constant-quality value (lower = better), within CRF_RANGES; ffv1 and prores_ks take none.
    preset: encoder speed preset. pix_fmt: output pixel format (must suit the codec).
    encoder_options: extra encoder options passed as-is, e.g. {"tune": "grain", "x264-params": "aq-mode=3"}.
    batch_size: frames per call to `process`.
    keep_sar: keep non-square pixels and their SAR tag; default False resamples the width after
        `process` so the output has square pixels at the correct display size.
    container: force the output container ("mkv", "mp4", "mov", "webm"); default from the output suffix,
        switched to MKV (with a note) when the suffix's container cannot hold the streams.
    quiet: no progress bar. progress: called as progress(done, total) once when the frames start (done:
        frames finished by an earlier run; from the calling thread), then after each encoded batch from
        the encoder thread (keep it quick; total is None when the container gives no frame count).
    max_frames: stop after this many frames (previews, quick checks); other streams are cut to match.
    high_bit_depth: give `process` uint16 RGB for >8-bit input (False: always uint8).
    queue_batches: depth of each bounded queue between decode, process and encode (memory stays flat).
    ingest: filters for analog sources before `process` (deinterlace, crop, BT.601 -> BT.709).
    resume: keep finished segments and a manifest beside the output so a crashed run continues.
    """

    codec: str = "libx264"
    crf: float | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    encoder_options: dict[str, str] = field(default_factory=dict)
    batch_size: int = 4
    keep_sar: bool = False
    container: str | None = None
    quiet: bool = False
    progress: ProgressFn | None = None
    max_frames: int | None = None
    high_bit_depth: bool = True
    queue_batches: int = 2
    ingest: IngestOptions = field(default_factory=IngestOptions)
    resume: bool = False

    def identity(self) -> dict[str, object]:
        """The options that decide the output's bytes (a resume manifest compares them)."""
        keep = ("codec", "crf", "preset", "pix_fmt", "encoder_options", "batch_size", "keep_sar", "container",
                "max_frames", "high_bit_depth")
        return {k: getattr(self, k) for k in keep}

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise VsrError(f"batch size must be at least 1, got {self.batch_size}")
        if self.queue_batches < 1:
            raise VsrError(f"queue depth must be at least 1, got {self.queue_batches}")
        if self.max_frames is not None and self.max_frames < 1:
            raise VsrError(f"max frames must be at least 1, got {self.max_frames}")


@dataclass(frozen=True)
class _CodecDefaults:
    crf: float | None
    preset: str | None
    pix_fmt: str
    pix_fmt_high: str
    extra: dict[str, str]


CODEC_DEFAULTS: dict[str, _CodecDefaults] = {
    "libx264": _CodecDefaults(16, "slow", "yuv420p", "yuv420p10le", {}),
    "libx265": _CodecDefaults(18, "slow", "yuv420p", "yuv420p10le", {"x265-params": "log-level=error"}),
    "libsvtav1": _CodecDefaults(20, "6", "yuv420p", "yuv420p10le", {}),
    # Intra-only with per-slice CRCs: any damage stays local and is detectable (the FFV1 archival profile).
    "ffv1": _CodecDefaults(None, None, "yuv420p", "yuv420p10le", {"level": "3", "slicecrc": "1", "g": "1"}),
    "prores_ks": _CodecDefaults(None, None, "yuv422p10le", "yuv422p10le", {"profile": "hq"}),
}

# Where the network runs on the CPU the encoder takes its time from the same cores: libx264 veryfast costs a
# third of slow's time for files of about the same size at CRF 16 (compact x4 on vtest.avi: 7% of the
# network's time against 22%, 70 against 75 kB a frame, 50.5 against 51.4 dB; benchmarks/bench_encoder_presets.py)
CPU_PRESETS = {"libx264": "veryfast"}


def for_cpu(options: VideoOptions) -> VideoOptions:
    """The options for a network that runs on the CPU: its encoder preset unless one was given."""
    if options.preset is None and "preset" not in options.encoder_options and options.codec in CPU_PRESETS:
        return replace(options, preset=CPU_PRESETS[options.codec])
    return options


# The --crf each encoder takes; None: the codec has no CRF. Encoders not listed are not checked.
CRF_RANGES: dict[str, tuple[int, int] | None] = {
    "libx264": (0, 51), "libx265": (0, 51), "libsvtav1": (0, 63), "libaom-av1": (0, 63),
    "libvpx-vp9": (0, 63), "ffv1": None, "prores_ks": None,
}
_NO_CRF_WHY = {"ffv1": "it is lossless", "prores_ks": "its quality is set by its profile (-x profile=...)"}


def check_encoder_options(options: VideoOptions) -> av.Codec:
    """The encoder, once it is known to exist and to take the --crf and --pix-fmt given: checked before
    any work starts, so a wrong value is one line naming what is allowed, not a failure (or a silent
    clamp) mid-encode."""
    name = options.codec
    try:
        codec = av.Codec(name, "w")
    except (av.error.FFmpegError, ValueError):
        known = ", ".join(c for c in CODEC_DEFAULTS if c in av.codecs_available)
        raise VsrError(f"video encoder {name!r} is not available; expected one of: {known}") from None
    if codec.type != "video":
        raise VsrError(f"{name!r} is a {codec.type} encoder, expected a video encoder")
    given = options.encoder_options.get("crf")
    for flag, crf, shown in (("--crf", options.crf, f"--crf {options.crf:g}" if options.crf is not None else ""),
                             ("-x crf", given, f"-x crf={given}")):
        if crf is None or name not in CRF_RANGES:
            continue
        allowed = CRF_RANGES[name]
        if allowed is None:
            raise VsrError(f"{name} takes no {flag} ({_NO_CRF_WHY[name]}); leave it out or choose "
                           "libx264, libx265 or libsvtav1")
        low, high = allowed
        try:
            ok = low <= float(crf) <= high
        except ValueError:
            ok = False
        if not ok:
            raise VsrError(f"{shown} is out of range for {name}: expected {low} to {high} (lower is better)")
    supported = [f.name for f in (codec.video_formats or [])]
    if options.pix_fmt and supported and options.pix_fmt not in supported:
        raise VsrError(f"{name} cannot encode pixel format {options.pix_fmt!r}; expected one of: "
                       f"{', '.join(supported)}")
    defaults = CODEC_DEFAULTS.get(name, _CodecDefaults(None, None, "yuv420p", "yuv420p10le", {}))
    pix_fmt = options.pix_fmt or defaults.pix_fmt
    _trial_open(name, pix_fmt if not supported or pix_fmt in supported else supported[0],
                _encoder_options(options, defaults), preset_given=options.preset is not None
                and "preset" not in options.encoder_options)
    return codec


def _encoder_options(options: VideoOptions, defaults: _CodecDefaults) -> dict[str, str]:
    """The options the encoder is opened with: the codec's defaults, --crf, --encoder-preset, then -x."""
    opts = dict(defaults.extra)
    crf = options.crf if options.crf is not None else defaults.crf
    if crf is not None:
        opts["crf"] = f"{crf:g}"
    preset = options.preset or defaults.preset
    if preset is not None:
        opts["preset"] = str(preset)
    opts.update({str(k): str(v) for k, v in options.encoder_options.items()})
    return opts


def _trial_open(name: str, pix_fmt: str, opts: dict[str, str], *, preset_given: bool = False) -> None:
    """Open the encoder once on a small picture with the run's options, so that a wrong --encoder-preset or
    an -x option the encoder does not know is one line now, not a failure after the first batch. The
    encoder's own complaint (libx264 prints it itself) is kept off the terminal."""
    ctx = av.CodecContext.create(name, "w")
    ctx.width, ctx.height, ctx.pix_fmt = 64, 64, pix_fmt
    ctx.time_base, ctx.framerate = Fraction(1, 25), 25
    ctx.options = dict(opts)
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            try:
                with av.logging.Capture():
                    ctx.open()
                error = None
            except (av.error.FFmpegError, ValueError) as e:
                error = e
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    shown = " ".join(f"{k}={v}" for k, v in opts.items())
    if error is not None:
        raise VsrError(f"the {name} encoder refuses its options ({shown}); check --encoder-preset and -x "
                       "against the encoder's documentation") from None
    unknown = sorted(ctx.options)  # what the encoder left unused: names it does not have
    if "preset" in unknown and preset_given:
        raise VsrError(f"the {name} encoder has no presets; leave out --encoder-preset")
    if unknown:
        raise VsrError(f"the {name} encoder has no option {unknown[0]!r} (-x {unknown[0]}=...); remove it or "
                       f"check its name in the encoder's documentation")


@dataclass(frozen=True)
class EncoderChoice:
    """Resolved encoder: name, canonical codec id (for container checks), pixel format and options."""

    name: str
    codec_id: str
    pix_fmt: str
    options: dict[str, str]
    notes: tuple[str, ...] = ()


def chroma(pix_fmt: str) -> str:
    """"444", "422", "420", "411" (or "" for grey): the chroma sampling of a pixel format; RGB counts as 444."""
    fmt = av.VideoFormat(pix_fmt, 64, 64)
    comps = fmt.components
    if fmt.is_rgb:
        return "444"
    if len(comps) < 3:
        return ""
    w, h = 64 // comps[1].width, 64 // comps[1].height
    return {(1, 1): "444", (2, 1): "422", (2, 2): "420", (4, 1): "411"}.get((w, h), "420")


def resolve_encoder(options: VideoOptions, *, high_bit_input: bool, input_pix_fmt: str | None = None) -> EncoderChoice:
    """Apply the per-codec defaults and check the codec, CRF and pixel format (check_encoder_options).
    By default the input's chroma sampling is kept (4:4:4 and 4:2:2 stay so) where the encoder can."""
    name = options.codec
    codec = check_encoder_options(options)
    defaults = CODEC_DEFAULTS.get(name, _CodecDefaults(None, None, "yuv420p", "yuv420p10le", {}))
    supported = [f.name for f in (codec.video_formats or [])]
    pix_fmt = options.pix_fmt or (defaults.pix_fmt_high if high_bit_input else defaults.pix_fmt)
    notes: list[str] = []
    if not options.pix_fmt and input_pix_fmt:
        have, want = chroma(pix_fmt), chroma(input_pix_fmt)
        if want in ("444", "422") and have != want and have in pix_fmt:
            keep = pix_fmt.replace(have, want, 1)
            if not supported or keep in supported:
                pix_fmt = keep
            elif chroma(pix_fmt) != "444":
                notes.append(f"{name} cannot keep the input's 4:{want[1]}:{want[2]} chroma: written as {pix_fmt} "
                             "(choose --codec ffv1 or --pix-fmt to keep it)")
    if supported and pix_fmt not in supported:  # a --pix-fmt was checked above: only a default gets here
        pix_fmt = supported[0]
    return EncoderChoice(name=name, codec_id=codec.canonical_name, pix_fmt=pix_fmt,
                         options=_encoder_options(options, defaults), notes=tuple(notes))
