"""Pictures stored sideways: EXIF orientation of photos and the display matrix of phone clips."""
from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np
import pytest

from vsr import images
from vsr.cli import main
from vsr.video import VideoOptions, probe, transcode
from vsr.video.ffmpeg import bundled_exe, ffmpeg_exe, run_cmd
from vsr.video.ingest import detect_crop

sys.path.insert(0, str(Path(__file__).resolve().parent))
import analog_media as am  # noqa: E402
import media  # noqa: E402

Image = pytest.importorskip("PIL.Image")


def pattern(h: int = 24, w: int = 32) -> np.ndarray:
    """Smooth, with no symmetry: every turn or mirror of it differs from the others."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 / w, y * 255 / h, (x + 2 * y) * 255 / (w + 2 * h)], axis=2)
    rgb[: h // 3, : w // 4] = 255  # a bright block at the top left
    return rgb.round().astype(np.uint8)


def with_orientation(path: Path, img: np.ndarray, orientation: int) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    kw = {"quality": 95} if path.suffix == ".jpg" else ({"lossless": True} if path.suffix == ".webp" else {})
    Image.fromarray(img).save(path, exif=exif.tobytes(), **kw)
    return path


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_every_exif_orientation_reads_as_displayed(tmp_path, suffix):
    ImageOps = pytest.importorskip("PIL.ImageOps")
    img = pattern()
    for orientation in range(1, 9):
        path = with_orientation(tmp_path / f"o{orientation}{suffix}", img, orientation)
        shown = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
        got = images.read_image(path)
        assert got.shape == shown.shape, orientation
        assert np.abs(got.astype(int) - shown).max() <= 8, orientation  # JPEG decoders differ a little


def test_sideways_phone_photo_is_upscaled_as_displayed(tmp_path, tiny_weights):
    img = pattern()  # stored 32 wide, 24 high; orientation 6: shown turned 90 degrees clockwise, 24 x 32
    src = with_orientation(tmp_path / "phone.jpg", img, 6)
    out = tmp_path / "phone.png"
    assert main(["upscale", str(src), "-o", str(out), "--model", str(tiny_weights), "--quiet"]) == 0
    result = images.read_image(out)
    assert result.shape == (64, 48, 3)  # the displayed shape, x2
    shown = np.rot90(img, -1).astype(float)
    small = images.resize(result, 24, 32).astype(float)
    err = np.abs(small - shown).mean()
    # the tiny network adds its residual to a nearest-neighbour upscale: close to the input as displayed,
    # and much closer to it than to the picture turned the other way
    assert err < 40 and err < np.abs(small - np.rot90(img, 1)).mean() / 2, err


@pytest.fixture(scope="module")
def phone_clip(tmp_path_factory) -> Path:
    """H.264 + AAC stored 64x48 with a display matrix turning it 90 degrees, as phones write them."""
    folder = tmp_path_factory.mktemp("phone")
    plain = media.make_mp4(folder / "plain.mp4", width=64, height=48, frames=6)
    return media.tag_rotation(plain, folder / "phone.mp4", 90)


def displayed_first_frame(path: Path, tmp: Path) -> np.ndarray:
    """The first frame as a player shows it: ffmpeg's command line turns frames by the display matrix (the
    bundled one: ffmpeg 5.1 reads no rotation from Matroska)."""
    png = tmp / f"{path.stem}-shown.png"
    run_cmd([bundled_exe() or ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", str(path), "-frames:v", "1",
             str(png)], what="decoding for display", path=path)
    return images.read_image(png)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_phone_clip_keeps_its_rotation_and_displays_like_the_input(phone_clip, tmp_path, suffix):
    assert probe(phone_clip).rotation == 90

    def up2(x: np.ndarray, *_) -> np.ndarray:
        return np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)

    res = transcode(phone_clip, tmp_path / f"out{suffix}", up2, 2, VideoOptions(quiet=True, preset="ultrafast"))
    assert res.output.suffix == suffix and any("rotation tag" in n for n in res.notes)
    with av.open(str(res.output)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (128, 96)  # stored as the input, x2
        frame = next(c.decode(v))
        assert frame.rotation == 90
        assert len(c.streams.audio) == 1
    assert probe(res.output).rotation == 90
    shown_in, shown_out = displayed_first_frame(phone_clip, tmp_path), displayed_first_frame(res.output, tmp_path)
    assert shown_in.shape == (64, 48, 3) and shown_out.shape == (128, 96, 3)
    small = images.resize(shown_out, 48, 64).astype(int)
    assert np.abs(small - shown_in).mean() < 6  # the same picture, the same way up


def test_unrotated_clip_gets_no_rotation(tmp_path):
    plain = media.make_mp4(tmp_path / "plain.mp4", frames=3, audio=False)
    res = transcode(plain, tmp_path / "out.mp4", lambda x, *_: x, 1, VideoOptions(quiet=True, preset="ultrafast"))
    assert probe(res.output).rotation == 0 and not any("rotation" in n for n in res.notes)


def test_crop_detection_sees_the_stored_picture_of_a_rotated_clip(tmp_path):
    src = am.make_vhs_capture(tmp_path / "vhs.mkv", width=176, height=144, border=8, band=6)
    turned = media.tag_rotation(src, tmp_path / "turned.mkv", 90)
    assert probe(turned).rotation == 90
    crop = detect_crop(probe(turned))  # ffmpeg would turn the frames for cropdetect unless told not to
    assert (crop.width, crop.height, crop.x, crop.y) == (160, 136, 8, 2)
