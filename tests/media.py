"""Small generated media for tests and benchmarks (ffmpeg lavfi sources; fast, deterministic)."""

from __future__ import annotations

import os
from pathlib import Path

from vsr.video.ffmpeg import ffmpeg_exe, has_option, rotation_args, run_cmd, run_ffmpeg

ASS_SUBS = """[Script Info]
ScriptType: v4.00+
PlayResX: 384
PlayResY: 288

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, \
Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, \
MarginV, Encoding
Style: Default,Test Sans,20,&H00FFFFFF,&H000000FF,&H00000000,&H00000000,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,1

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
Dialogue: 0,0:00:00.10,0:00:00.40,Default,,0,0,0,,Hello
Dialogue: 0,0:00:00.50,0:00:00.80,Default,,0,0,0,,World
"""

CHAPTERS = """;FFMETADATA1
title=Generated test clip
comment=made by tests/media.py
[CHAPTER]
TIMEBASE=1/1000
START=0
END=400
title=Opening
[CHAPTER]
TIMEBASE=1/1000
START=400
END=900
title=Ending
"""

FONT_BYTES = b"\x00\x01\x00\x00" + bytes(range(256))  # not a real font: only its bytes must survive
BT601 = "color_primaries=smpte170m:color_trc=smpte170m:colorspace=smpte170m:range=tv"
# the same tags on the encoder: before ffmpeg 6 the command line took an encoder's colour from the input,
# not from the filtered frames, and wrote the setparams tags nowhere
BT601_TAGS = ["-color_primaries", "smpte170m", "-color_trc", "smpte170m", "-colorspace", "smpte170m",
              "-color_range", "tv"]
DROPPED = (3, 7, 8)  # frame numbers removed to make the frame rate variable


def passthrough() -> list[str]:
    """Every frame at its own time (no frames dropped or repeated): `-fps_mode` from ffmpeg 5.1, `-vsync` before."""
    return ["-fps_mode" if has_option(ffmpeg_exe(), "fps_mode") else "-vsync", "passthrough"]


def tag_rotation(src: Path, dst: Path, degrees: int) -> Path:
    """A stream copy of `src` whose video displays turned `degrees` counter-clockwise (a display matrix, as
    phones write), written by a binary that can put one into dst's container."""
    how = rotation_args(degrees, "mp4" if dst.suffix in (".mp4", ".mov") else "mkv")
    assert how is not None, "no ffmpeg at hand writes a display matrix into " + dst.suffix
    exe, turn, out_args = how
    run_cmd([exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
             *(a for k, v in turn.items() for a in (f"-{k}", v)), "-i", str(src), "-c", "copy", *out_args,
             str(dst)], what="tagging a rotation", path=src)
    return dst


def video_filter(*, width: int, height: int, frames: int, rate: int = 25, sar: str = "1", pix_fmt: str,
                 vfr: bool = False, start_frames: int = 0) -> str:
    """testsrc2 cropped to any (odd) size, optionally with gaps and a late start, tagged BT.601."""
    f = (f"testsrc2=size={width + width % 2}x{height + height % 2}:rate={rate},trim=end_frame={frames},"
         f"format=rgb24,crop={width}:{height}:0:0,setsar={sar}")
    if vfr:
        f += ",select='not(" + "+".join(f"eq(n\\,{n})" for n in DROPPED) + ")'"
    if start_frames:
        f += f",setpts=PTS+{start_frames}"  # in frames of the source rate
    return f + f",format={pix_fmt},setparams={BT601}"


def make_rich_clip(path: Path, *, width: int = 65, height: int = 49, frames: int = 20, sar: str = "4/3",
                   pix_fmt: str = "yuv420p", start_frames: int = 3) -> Path:
    """MKV with everything users complain about losing: odd size, anamorphic SAR, BT.601 tags, variable
    frame rate, video starting `start_frames` frames after the audio, AAC + PCM audio (languages, a 'comment'
    disposition), ASS subtitles, chapters, container title and a font attachment."""
    work = path.parent
    subs, chapters, font = work / f"{path.stem}.ass", work / f"{path.stem}.ffmeta", work / "TestSans.ttf"
    subs.write_text(ASS_SUBS)
    chapters.write_text(CHAPTERS)
    font.write_bytes(FONT_BYTES)
    seconds = (frames + start_frames) / 25
    vf = video_filter(width=width, height=height, frames=frames, sar=sar, pix_fmt=pix_fmt, vfr=True,
                      start_frames=start_frames)
    run_ffmpeg([
        "-f", "lavfi", "-i", vf,
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}:sample_rate=48000",
        "-f", "lavfi", "-i", f"sine=frequency=660:duration={seconds}:sample_rate=44100",
        "-i", str(subs), "-i", str(chapters),
        "-map", "0:v", "-map", "1:a", "-map", "2:a", "-map", "3:s", "-map_metadata", "4", "-map_chapters", "4",
        "-copyts", "-c:v", "ffv1", *BT601_TAGS, *passthrough(),  # -copyts keeps the late video start
        "-c:a:0", "aac", "-c:a:1", "pcm_s16le", "-c:s", "copy",
        "-attach", str(font), "-metadata:s:t", "mimetype=application/x-truetype-font",
        "-metadata:s:v", "title=Main picture", "-metadata:s:a:0", "language=eng",
        "-metadata:s:a:1", "language=jpn", "-metadata:s:a:1", "title=Commentary",
        "-disposition:a:1", "comment", "-metadata:s:s", "language=fre",
        str(path)], what="making a test clip")
    for p in (subs, chapters, font):
        os.unlink(p)
    return path


def make_mp4(path: Path, *, width: int = 64, height: int = 48, frames: int = 20, rate: int = 25,
             pix_fmt: str = "yuv420p", audio: bool = True) -> Path:
    """An ordinary H.264 + AAC MP4 (index at the end, as ffmpeg writes it)."""
    vf = video_filter(width=width, height=height, frames=frames, rate=rate, pix_fmt=pix_fmt)
    args = ["-f", "lavfi", "-i", vf]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={frames / rate}", "-c:a", "aac"]
    args += ["-c:v", "libx264", *BT601_TAGS, "-preset", "ultrafast", "-g", "10", str(path)]
    run_ffmpeg(args, what="making a test mp4")
    return path


def make_clip(path: Path, *, seconds: float, width: int = 320, height: int = 240, rate: int = 25) -> Path:
    """A longer clip with audio (benchmarks): H.264 + AAC."""
    vf = video_filter(width=width, height=height, frames=int(seconds * rate), rate=rate, pix_fmt="yuv420p")
    run_ffmpeg(["-f", "lavfi", "-i", vf, "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
                "-c:v", "libx264", *BT601_TAGS, "-preset", "ultrafast", "-c:a", "aac", str(path)],
               what="making a clip")
    return path


def make_audio_only(path: Path) -> Path:
    run_ffmpeg(["-f", "lavfi", "-i", "sine=frequency=440:duration=0.5", "-c:a", "aac", str(path)],
               what="making an audio file")
    return path


def make_truncated_mp4(path: Path) -> Path:
    """An MP4 cut in half: its index (moov, written last) is gone, as after an interrupted download."""
    full = path.with_name(path.stem + ".full.mp4")
    make_mp4(full, frames=25)
    data = full.read_bytes()
    assert data.rfind(b"moov") > len(data) // 2, "expected the index at the end"
    path.write_bytes(data[: len(data) // 2])
    full.unlink()
    return path


def make_ts(path: Path, *, frames: int = 15) -> Path:
    """MPEG-TS as broadcast captures are: timestamps start near 1.4 s, audio slightly before video,
    29.97 fps, B-frames."""
    vf = video_filter(width=64, height=48, frames=frames, rate=30, pix_fmt="yuv420p").replace(
        "rate=30", "rate=30000/1001")
    run_ffmpeg(["-f", "lavfi", "-i", vf, "-f", "lavfi", "-i", f"sine=frequency=440:duration={frames / 29.97}",
                "-c:v", "libx264", *BT601_TAGS, "-preset", "ultrafast", "-bf", "2", "-c:a", "mp2", str(path)],
               what="making a test transport stream")
    return path
