"""Muxing: the new video plus every other stream of the input, copied untouched, into the output container."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import ffmpeg

from vsr.errors import VsrError
from vsr.video.ffmpeg import bundled_exe, compile_cmd, describe, ffmpeg_exe, rotation_args, run_cmd
from vsr.video.probe import StreamInfo, VideoInfo, read_rotation

# container key -> (ffmpeg muxer, file suffix)
CONTAINERS = {"mkv": ("matroska", ".mkv"), "mp4": ("mp4", ".mp4"), "mov": ("mov", ".mov"),
              "webm": ("webm", ".webm")}
_SUFFIXES = {".mkv": "mkv", ".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".webm": "webm"}

_PCM = {"pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be", "pcm_s32le", "pcm_s32be", "pcm_f32le",
        "pcm_f32be", "pcm_u8"}
# What each non-Matroska container holds well (players included); Matroska holds every codec.
_HOLDS: dict[str, dict[str, set[str]]] = {
    "mp4": {"video": {"h264", "hevc", "av1", "vp9", "mpeg4", "mjpeg", "png"},
            "audio": {"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac", "mp2"},
            "subtitle": {"mov_text"}, "attachment": set()},
    "mov": {"video": {"h264", "hevc", "prores", "mpeg4", "mjpeg", "png"},
            "audio": {"aac", "mp3", "ac3", "eac3", "alac", "mp2"} | _PCM,
            "subtitle": {"mov_text"}, "attachment": set()},
    "webm": {"video": {"vp8", "vp9", "av1"}, "audio": {"opus", "vorbis"}, "subtitle": {"webvtt"},
             "attachment": set()},
}
_MKV_TEXT_SUBS = {"mov_text"}  # MP4 text subtitles: Matroska needs them as SubRip (same text, no loss)


@dataclass
class MuxPlan:
    """Where and how the output is written, and which input streams go with the new video."""

    path: Path
    container: str  # key of CONTAINERS
    keep: list[StreamInfo]  # input streams copied next to the new video, in output order
    notes: list[str] = field(default_factory=list)
    forced: bool = False  # the user named the container; never switch it

    @property
    def fallback_path(self) -> Path | None:
        """Where the output goes if the container refuses a stream while muxing (Matroska holds all)."""
        return None if self.forced or self.container == "mkv" else self.path.with_suffix(CONTAINERS["mkv"][1])


def _holds(container: str, s: StreamInfo) -> bool:
    if container == "mkv":
        return True  # MP4 text subtitles are converted to SubRip at mux time
    allowed = _HOLDS[container].get(s.type, set())
    return s.codec in allowed


def plan_mux(dst: Path, info: VideoInfo, *, video_codec: str, container: str | None = None) -> MuxPlan:
    """Choose the output container: the user's (suffix or explicit), else MKV when it cannot hold the streams."""
    notes: list[str] = []
    keep: list[StreamInfo] = []
    for s in info.streams:
        if s.index == info.video_index:
            continue
        if s.type in ("audio", "subtitle", "attachment", "video"):
            keep.append(s)
        else:
            notes.append(f"stream {s.index} ({s.type}) not copied: data streams (timecode, telemetry) are "
                         "not carried over")
    if container is not None:
        if container not in CONTAINERS:
            raise VsrError(f"unknown container {container!r}; expected one of: {', '.join(CONTAINERS)}")
        chosen, forced = container, True
    else:
        chosen, forced = _SUFFIXES.get(dst.suffix.lower(), "mkv"), False
        if dst.suffix.lower() not in _SUFFIXES:
            notes.append(f"output container {dst.suffix or '(none)'} is not supported for video; writing .mkv")
    if chosen != "mkv":
        misfits = [f"{s.type} {s.codec}" for s in keep if not _holds(chosen, s)]
        if video_codec not in _HOLDS[chosen]["video"]:
            misfits.insert(0, f"video {video_codec}")
        if misfits:
            if forced:
                raise VsrError(f"{chosen} cannot hold {', '.join(misfits)}; use the mkv container")
            notes.append(f"output written as .mkv instead of {dst.suffix}: {chosen} cannot hold "
                         f"{', '.join(misfits)}")
            chosen = "mkv"
    path = dst if _SUFFIXES.get(dst.suffix.lower()) == chosen else dst.with_suffix(CONTAINERS[chosen][1])
    if forced and path != dst:
        notes.append(f"output written as {path.name} (container {chosen})")
    return MuxPlan(path=path, container=chosen, keep=keep, notes=notes, forced=forced)


def _disposition_arg(flags: int) -> str:
    names = [d.name for d in av.stream.Disposition if d.value and (flags & d.value) == d.value]
    return "+".join(n for n in names if n) or "0"


_IMAGE_TYPES = {"png": ("image/png", ".png"), "mjpeg": ("image/jpeg", ".jpg"), "bmp": ("image/bmp", ".bmp"),
                "gif": ("image/gif", ".gif"), "webp": ("image/webp", ".webp")}


def _cover_attachment(path: Path, cover: StreamInfo, folder: Path, index: int) -> list[str]:
    """The `-attach` options that put a cover picture's bytes (its one packet) into the output as output
    stream `index`, with the input's file name and MIME type (or ones made from its codec)."""
    mime, ext = _IMAGE_TYPES.get(cover.codec, ("application/octet-stream", ".bin"))
    name = cover.metadata.get("filename") or f"cover{ext}"
    with av.open(str(path)) as c:
        data = next((bytes(p) for p in c.demux(c.streams[cover.index]) if p.size), b"")
    picture = folder / f"cover-{cover.index}{Path(name).suffix or ext}"
    picture.write_bytes(data)
    return ["-attach", str(picture), f"-metadata:s:{index}", f"mimetype={cover.metadata.get('mimetype') or mime}",
            f"-metadata:s:{index}", f"filename={name}"]


def mux(*, video: Path, info: VideoInfo, plan: MuxPlan, out: Path, size: tuple[int, int],
        sar: Fraction | None = None, time_scale: int | None = None, end_time: float | None = None) -> list[str]:
    """Write `out`: the new video stream, then every kept input stream with `-c copy`; returns notes.

    `-copyts` keeps every timestamp as it is in the two inputs, so the audio offset relative to the
    video is exactly the input's; only a file that starts late (MPEG-TS) is moved to start at 0, every
    stream by the same amount, as ffmpeg itself does. Container metadata and chapters come from the input; each copied
    stream keeps its own metadata (language, title) and disposition (ffmpeg's default for copies).
    """
    muxer = CONTAINERS[plan.container][0]
    shift = float(info.start_shift * info.time_base)  # a negative start: the new video is moved by this much
    src = ffmpeg.input(str(info.path), **({"itsoffset": f"{shift:.6f}"} if shift else {}))
    # Matroska writes a cover picture (attached_pic) mapped as a stream as an ordinary video track: it goes
    # in as an attachment, as mkvmerge stores covers, and reads back as the same attached picture.
    covers = [s for s in plan.keep if s.is_cover] if plan.container == "mkv" else []
    mapped = [s for s in plan.keep if s not in covers]
    # The input is input 1 either way: when no stream of it is kept, ffmpeg-python leaves it out, and it
    # is added as a plain -i for its metadata and chapters.
    extra_inputs = [] if mapped else [str(info.path)]
    opts: dict[str, str] = {"c": "copy", "map_metadata": "1", "map_chapters": "1"}
    src_video = next(s for s in info.streams if s.index == info.video_index)
    # -metadata:s:0 is given once per key; ffmpeg-python writes a keyword only once, so these are plain
    # items placed with the other output options.
    stream_meta: list[str] = []
    for key in ("language", "title", "handler_name"):
        if key in src_video.metadata:
            stream_meta += ["-metadata:s:0", f"{key}={src_video.metadata[key]}"]
    for k, cover in enumerate(covers, start=1 + len(mapped)):
        stream_meta += _cover_attachment(info.path, cover, out.parent, k)
    # Every disposition given explicitly: otherwise ffmpeg marks a "default" track on its own.
    for j, s in enumerate([src_video, *mapped]):
        opts[f"disposition:{j}"] = _disposition_arg(s.disposition)
        if plan.container == "mkv" and s.codec in _MKV_TEXT_SUBS:
            # ffmpeg-python sorts keywords, so -c copy always comes before the -c:N that overrides it
            opts[f"c:{j}"] = "srt"
    if sar is not None:  # ffmpeg takes a display aspect; from the encoded size it gives exactly this SAR
        opts["aspect:0"] = f"{sar.numerator * size[0]}:{sar.denominator * size[1]}"
    if info.start_time > 0:  # a late-starting file (MPEG-TS) starts at 0; every stream moves together
        opts["output_ts_offset"] = f"{-info.start_time:.6f}"
    if end_time is not None:
        opts["to"] = f"{end_time + shift:.6f}"  # cut every stream where the video ends (input timestamps)
    if plan.container == "mkv":
        opts["default_mode"] = "passthrough"  # keep the input's default flags, invent none
        # Timestamps as they are, below zero too (AAC priming), as ffmpeg 9 writes them by default: 5.1's
        # default moved every stream later by the priming, the video off its input times.
        opts["avoid_negative_ts"] = "disabled"
    if plan.container in ("mp4", "mov"):
        opts["movflags"] = "+faststart"  # index first: playable while still downloading
        if time_scale:  # edit lists (a late video start) in the video's own time scale, not 1/1000 s
            opts["movie_timescale"] = str(time_scale)

    def run(exe: str, turn: dict[str, str], turn_args: list[str]) -> None:
        streams = [ffmpeg.input(str(video), **turn)["v:0"], *(src[str(s.index)] for s in mapped)]  # -map 0:v:0 1:N
        output = ffmpeg.output(*streams, str(out), format=muxer, **opts)
        cmd = compile_cmd(output, global_args=["-copyts"], extra_inputs=extra_inputs,
                          output_args=[*turn_args, *stream_meta], exe=exe)
        run_cmd(cmd, what=f"joining the new video and the copied streams into {plan.path.name}", path=info.path)

    if not info.rotation:
        run(ffmpeg_exe(), {}, [])
        return []
    # A phone clip's display matrix goes on the new stream as it was: the network ran on the stored
    # picture, so the output is stored the same way round and displays like the input. A binary whose
    # muxer drops the matrix for this container (found by reading it back) leaves the step to the bundled one.
    tried: list[str] = []
    for exe in (ffmpeg_exe(), bundled_exe()):
        how = rotation_args(info.rotation, plan.container, exe=exe) if exe else None
        if how is None or how[0] in tried:
            continue
        tried.append(how[0])
        run(*how)
        if read_rotation(out) == info.rotation:
            return []
    if not tried:
        run(ffmpeg_exe(), {}, [])
    return [f"the rotation tag could not be written into {plan.path.name} by {describe(ffmpeg_exe())}: players "
            "show it as stored, turned from the input"]
