"""Training clips for the temporal model: one degradation draw per clip, a smooth virtual camera whose
frames are the true crops of the photo, consecutive video frames, and the same clip for the same seed."""
from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from vsr.errors import VsrError
from vsr.train import clips
from vsr.train.data import MARGIN
from vsr.train.degrade import DegradeConfig, Degradation

PATCH, SCALE, FRAMES = 8, 2, 4
SIZE = (PATCH + 2 * MARGIN) * SCALE  # the HR frame a clip renders, margin included


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from skimage import data

    return cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)


def video(n: int = 8) -> list[np.ndarray]:
    """n frames of a photo panning 3 px per frame to the left, each a little brighter (so that no
    frame is a crop of another)."""
    from skimage import data

    img = data.coffee()[:96, :200].astype(np.int16)
    return [np.clip(img[:, 3 * i:3 * i + 120] + 4 * i, 0, 255).astype(np.uint8) for i in range(n)]


def spy(monkeypatch) -> list:
    """Records the parameters of every frame degraded, and every draw."""
    seen: list = []
    analog, sample = Degradation._analog, Degradation.sample

    def recording_analog(self, hr, params, rng):
        seen.append(("frame", params))
        return analog(self, hr, params, rng)

    def recording_sample(self, rng):
        seen.append(("draw", None))
        return sample(self, rng)

    monkeypatch.setattr(Degradation, "_analog", recording_analog)
    monkeypatch.setattr(Degradation, "sample", recording_sample)
    return seen


@pytest.mark.parametrize("source", ["camera", "video"])
def test_one_degradation_draw_per_clip(monkeypatch, photo, source):
    seen = spy(monkeypatch)
    deg = Degradation(scale=SCALE)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        if source == "camera":
            lq, hq = clips.camera_clip(photo, deg, rng, frames=FRAMES, patch=PATCH)
        else:
            lq, hq = clips.video_clip(video(), deg, rng, frames=FRAMES, patch=PATCH)
        assert lq.shape == (FRAMES, PATCH, PATCH, 3) and hq.shape == (FRAMES, PATCH * SCALE, PATCH * SCALE, 3)
        assert lq.dtype == hq.dtype == np.uint8
        draws, frames = [p for k, p in seen if k == "draw"], [p for k, p in seen if k == "frame"]
        assert len(draws) == 1 and len(frames) == FRAMES
        assert all(p == frames[0] for p in frames)  # every frame of the clip: the same parameters
        seen.clear()


def test_only_the_noise_changes_from_frame_to_frame(photo):
    still = clips.CameraConfig(shift=0.0, zoom=0.0, rotate=0.0)
    deg = Degradation(scale=SCALE, config=DegradeConfig(luma_noise=(0.03, 0.03), codecs={"none": 1.0}))
    lq, hq = clips.camera_clip(photo, deg, np.random.default_rng(0), frames=FRAMES, patch=PATCH, camera=still)
    assert all(np.array_equal(h, hq[0]) for h in hq)  # a still camera: one picture
    assert not np.array_equal(lq[0], lq[1])  # new grain ...
    assert np.abs(lq[0].astype(int) - lq[1].astype(int)).mean() < 12  # ... on the same degraded picture


def test_camera_frames_are_the_true_crops(photo):
    # an integer pan: each frame is exactly the photo's crop there; a half-pixel one every other frame
    o = (SIZE - 1) / 2
    path = clips.CameraPath(center=(40 + o, 50 + o), velocity=(3.0, -2.0), zoom_rate=0.0, rotate_rate=0.0)
    for i in range(FRAMES):
        x, y = 40 + 3 * i, 50 - 2 * i
        assert np.array_equal(clips.render(photo, path, i, SIZE), photo[y:y + SIZE, x:x + SIZE])
    half = clips.CameraPath(center=(40 + o, 50 + o), velocity=(0.5, 0.5), zoom_rate=0.0, rotate_rate=0.0)
    assert np.array_equal(clips.render(photo, half, 2, SIZE), photo[51:51 + SIZE, 41:41 + SIZE])
    # a clip's ground truth is its camera's frames without the margin
    lq, hq = clips.camera_clip(photo, Degradation(scale=SCALE), np.random.default_rng(7), frames=FRAMES, patch=PATCH)
    drawn = clips.camera_path(photo.shape[:2], size=SIZE, frames=FRAMES, rng=np.random.default_rng(7))
    m = MARGIN * SCALE
    for i in range(FRAMES):
        assert np.array_equal(hq[i], clips.render(photo, drawn, i, SIZE)[m:-m, m:-m])


def test_camera_motion_is_smooth_and_stays_in_the_photo(photo):
    rng = np.random.default_rng(3)
    for _ in range(5):
        path = clips.camera_path(photo.shape[:2], size=SIZE, frames=6, rng=rng,
                                 camera=clips.CameraConfig(shift=2.0, zoom=0.02, rotate=1.0))
        ms = [path.matrix(i, SIZE) for i in range(6)]
        corners = np.array([[0, 0, 1], [SIZE - 1, 0, 1], [0, SIZE - 1, 1], [SIZE - 1, SIZE - 1, 1]]).T
        for m in ms:
            pts = m @ corners  # (2, 4) in the photo
            assert (pts >= 0).all() and (pts <= 255).all()
        centres = np.array([m @ [(SIZE - 1) / 2, (SIZE - 1) / 2, 1] for m in ms])
        assert np.allclose(np.diff(centres, 2, axis=0), 0, atol=1e-9)  # constant velocity
        assert np.abs(np.diff(centres, axis=0)).max() <= 2.0
        steps = [np.linalg.solve(a[:, :2], b[:, :2]) for a, b in zip(ms, ms[1:])]  # frame-to-frame zoom and turn
        assert all(np.allclose(s, steps[0]) for s in steps)
    # the pictures move as the path says: the pan between frames found by ECC image alignment
    pan = clips.CameraConfig(shift=2.0, zoom=0.0, rotate=0.0)
    path = clips.camera_path(photo.shape[:2], size=64, frames=3, rng=np.random.default_rng(3), camera=pan)
    grey = [cv2.cvtColor(clips.render(photo, path, i, 64), cv2.COLOR_RGB2GRAY).astype(np.float32) for i in range(3)]
    for a, b in zip(grey, grey[1:]):
        found = cv2.findTransformECC(a, b, np.eye(2, 3, dtype=np.float32), cv2.MOTION_TRANSLATION,
                                     (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-6), None, 1)[1]
        assert np.abs(-found[:, 2] - path.velocity).max() < 0.1  # the picture moves against the camera


def test_video_clips_are_consecutive_frames_with_one_crop():
    frames = video()
    lq, hq = clips.video_clip(frames, Degradation(scale=SCALE), np.random.default_rng(4), frames=FRAMES, patch=PATCH)
    m = MARGIN * SCALE
    crop = slice(m, m + PATCH * SCALE)
    hits = [(start, y, x) for start in range(len(frames) - FRAMES + 1) for y in range(0, 96 - SIZE + 1, SCALE)
            for x in range(0, 120 - SIZE + 1, SCALE)
            if all(np.array_equal(hq[i], frames[start + i][y:y + SIZE, x:x + SIZE][crop, crop]) for i in range(FRAMES))]
    assert len(hits) == 1  # the clip is frames start.. start+3, each cut at the same place
    with pytest.raises(VsrError, match="frames wanted"):
        clips.video_clip(frames[:2], Degradation(scale=SCALE), np.random.default_rng(0), frames=FRAMES, patch=PATCH)


def test_read_video_gives_every_frame(tmp_path: Path):
    path = tmp_path / "clip.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 120, 96, "bgr0"  # stored as RGB: lossless
        for img in video(6):
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    got = clips.read_video(path)
    assert len(got) == 6 and all(np.array_equal(a, b) for a, b in zip(got, video(6)))
    assert len(clips.read_video(path, max_frames=4)) == 4


def test_clips_are_deterministic_by_seed(photo):
    deg = Degradation(scale=SCALE)
    for make in (lambda rng: clips.camera_clip(photo, deg, rng, frames=FRAMES, patch=PATCH),
                 lambda rng: clips.video_clip(video(), deg, rng, frames=FRAMES, patch=PATCH)):
        a, b, c = (make(np.random.default_rng(seed)) for seed in (11, 11, 12))
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        assert not (np.array_equal(a[0], c[0]) and np.array_equal(a[1], c[1]))


def test_a_photo_too_small_is_refused(photo):
    with pytest.raises(VsrError, match="too small"):
        clips.camera_clip(photo[:20, :20], Degradation(scale=SCALE), np.random.default_rng(0), patch=PATCH)


def test_training_readers_decode_colour_as_the_upscaler_does(tmp_path):
    """An untagged HD clip is BT.709, as players and `vsr upscale` take it: the trainer's frames must have
    those colours, not the BT.601 ones a plain conversion gives."""
    from vsr.train.data import video_frames
    from vsr.video.ffmpeg import run_ffmpeg

    path = tmp_path / "hd.mp4"
    colour = (192, 32, 64)  # saturated: BT.601 and BT.709 decode it levels apart
    run_ffmpeg(["-f", "lavfi", "-i", "color=c=0xC02040:s=1280x720:r=25:d=0.12",
                "-vf", "scale=out_color_matrix=bt709:out_range=tv,format=yuv444p",
                "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", str(path)], what="making an HD clip")
    for frames in (clips.read_video(path), [f.hq for f in video_frames(path, 3)]):
        assert len(frames) == 3
        for f in frames:
            assert np.abs(f[8:-8, 8:-8].astype(int) - colour).max() <= 2, f[360, 640]
