"""The engine's contracts for sampled and recurrent networks, proven with the dummies of dummies.py:
output never depends on batching, tiling, segments or a kill and resume; temperature 0 is the plain
output; a scene cut or a reset clears a recurrent state."""
from __future__ import annotations

import json
import re
import subprocess
import time
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dummies  # noqa: E402

from vsr import arch  # noqa: E402
from vsr.engine import Upscaler  # noqa: E402
from vsr.errors import VsrError  # noqa: E402
from vsr.upscale import UpscaleOptions, upscale  # noqa: E402
from vsr.video import VideoOptions, scenes  # noqa: E402
from vsr.video.resume import MANIFEST, work_dir_for  # noqa: E402

dummies.register()
FRAMES = torch.rand(8, 3, 46, 70, generator=torch.Generator().manual_seed(3))


def run(engine: Upscaler, frames: torch.Tensor, batch: int, resets=None) -> torch.Tensor:
    """Frames 0..N-1 of one video through one session, `batch` at a time."""
    session = engine.session()
    resets = resets or [i == 0 for i in range(len(frames))]
    outs = [session(frames[i:i + batch], indices=list(range(i, min(i + batch, len(frames)))),
                    resets=resets[i:i + batch]) for i in range(0, len(frames), batch)]
    return torch.cat(outs)


@pytest.mark.parametrize("name", ["dummy_sampled", "dummy_recurrent"])
def test_batching_and_tiling_do_not_change_the_output(name):
    desc = arch.build(name)
    opts = {"temperature": 0.7, "seed": 5} if desc.contract == "sampled" else {}
    whole = run(Upscaler(desc, tile=0, **opts), FRAMES, 1)
    assert torch.equal(whole, run(Upscaler(desc, tile=0, **opts), FRAMES, 4))
    tiles = Upscaler(desc, tile=32, overlap=8, **opts)
    assert tiles.tiles(46, 70) == 6
    assert (run(tiles, FRAMES, 3) - whole).abs().max() < 1e-6


def test_sampled_latents_are_seeded_by_frame_and_scaled_by_temperature():
    desc = arch.build("dummy_sampled")
    plain = desc.model(FRAMES).detach()  # the deterministic part
    assert torch.equal(run(Upscaler(desc), FRAMES, 4), plain)  # temperature 0 by default: no noise at all
    hot = run(Upscaler(desc, temperature=1.0, seed=1), FRAMES, 4)
    noise = hot - plain
    assert 0.05 < float(noise.std()) < 0.2
    # each frame its own draw; the same frame number and seed the same draw; another seed another draw
    assert not torch.allclose(noise[0], noise[1])
    again = Upscaler(desc, temperature=1.0, seed=1).session()(FRAMES[5:6], indices=[5], resets=[True])
    assert torch.equal(again, hot[5:6])
    other = run(Upscaler(desc, temperature=1.0, seed=2), FRAMES, 4)
    assert not torch.allclose(other, hot)
    half = run(Upscaler(desc, temperature=0.5, seed=1), FRAMES, 4)
    assert torch.allclose(half - plain, noise * 0.5, atol=1e-6)


def test_settings_a_model_does_not_take_are_refused():
    with pytest.raises(VsrError, match="takes no temperature"):
        Upscaler(arch.build("compact", nf=4, num_conv=1, upscale=2), temperature=0.8)
    with pytest.raises(VsrError, match="takes no seed"):
        Upscaler(arch.build("dummy_recurrent"), seed=3)


def test_recurrent_state_is_carried_and_reset():
    desc = arch.build("dummy_recurrent")
    e = Upscaler(desc, tile=0)
    out = run(e, FRAMES, 2)
    fresh = desc.model(FRAMES[:1], None, None)
    assert torch.allclose(out[0], fresh[0])
    assert not torch.allclose(out[5], desc.model(FRAMES[5:6], None, None)[0])  # it remembers
    # a reset at frame 4: from there on exactly a new video that starts at frame 4
    resets = [i in (0, 4) for i in range(8)]
    cut = run(Upscaler(desc, tile=0), FRAMES, 3, resets)
    assert torch.equal(cut[:4], out[:4])
    assert torch.equal(cut[4:], run(Upscaler(desc, tile=0), FRAMES[4:], 3))


def shots() -> tuple[np.ndarray, np.ndarray]:
    """Two real photographs (scikit-image's) at 256x192: two shots of a film."""
    from skimage import data

    return tuple(cv2.resize(img, (256, 192), interpolation=cv2.INTER_AREA) for img in (data.astronaut(), data.coffee()))


def test_scene_cut_detection():
    a, b = shots()
    moved = a[2:, 5:]  # the camera moved
    noisy = np.clip(a + np.random.default_rng(0).normal(0, 8, a.shape), 0, 255).astype(np.uint8)
    sa = scenes.signature(a)
    assert not scenes.is_cut(sa, scenes.signature(cv2.resize(moved, (256, 192))))
    assert not scenes.is_cut(sa, scenes.signature(noisy))
    assert scenes.is_cut(sa, scenes.signature(b))
    assert not scenes.is_cut(scenes.signature(a.astype(np.uint16) * 257), sa)


# -- through the video layer -------------------------------------------------------------------------

def make_two_shots(path: Path, frames: int = 30, cut: int = 17) -> Path:
    """A lossless 64x48 clip: a shot panning across one photograph, then a cut to another at `cut`."""
    shot_a, shot_b = shots()
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv444p"
        for i in range(frames):
            src = shot_a if i < cut else shot_b
            img = cv2.resize(np.ascontiguousarray(src[60:156, 3 * i:3 * i + 128]), (64, 48), interpolation=cv2.INTER_AREA)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def frames_of(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24").tobytes() for f in c.decode(video=0)]


def options(model: Path, **kw) -> UpscaleOptions:
    return UpscaleOptions(model=str(model), quiet=True, overwrite=False, device="cpu",
                          video=VideoOptions(codec="ffv1", pix_fmt="yuv444p", quiet=True, resume=True), **kw)


@pytest.mark.parametrize("name,kw", [("dummy_sampled", {"temperature": 0.8, "seed": 9}), ("dummy_recurrent", {})])
def test_video_output_does_not_depend_on_batch(tmp_path, name, kw):
    model = dummies.save(name, tmp_path / f"{name}.safetensors")
    src = make_two_shots(tmp_path / "in.mkv")
    ref = upscale(src, tmp_path / "ref.mkv", options(model, batch=1, segment_frames=7, **kw)).outputs[0]
    four = upscale(src, tmp_path / "b4.mkv", options(model, batch=4, segment_frames=7, **kw)).outputs[0]
    assert frames_of(Path(ref)) == frames_of(Path(four))
    if name == "dummy_sampled":  # no state: segments do not matter either
        one = upscale(src, tmp_path / "one.mkv", options(model, batch=3, segment_frames=1000, **kw)).outputs[0]
        assert frames_of(Path(one)) == frames_of(Path(ref))


def test_a_scene_cut_resets_the_recurrent_state(tmp_path):
    model = dummies.save("dummy_recurrent", tmp_path / "rec.safetensors")
    src = make_two_shots(tmp_path / "in.mkv", frames=30, cut=17)
    out = frames_of(Path(upscale(src, tmp_path / "o.mkv", options(model, segment_frames=1000)).outputs[0]))
    tail = make_two_shots(tmp_path / "tail.mkv", frames=30, cut=17)  # the same clip ...
    with av.open(str(tail)) as c:  # ... whose second shot alone, as a video of its own
        second = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)][17:]
    alone = tmp_path / "alone.mkv"
    with av.open(str(alone), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv444p"
        for img in second:
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    fresh = frames_of(Path(upscale(alone, tmp_path / "a.mkv", options(model, segment_frames=1000)).outputs[0]))
    assert out[17:] == fresh  # after the cut, nothing of the first shot is left


def _cli(src: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return [sys.executable, str(Path(__file__).with_name("dummies.py")), "upscale", str(src), "-o", str(out),
            "--model", str(model), "--codec", "ffv1", "--pix-fmt", "yuv444p", "--segment-frames", "6", "--quiet",
            "--deinterlace", "off", "--device", "cpu", *extra]


@pytest.mark.parametrize("name,extra", [("dummy_sampled", ("--tau", "0.6", "--seed", "4")),
                                        ("dummy_recurrent", ())])
def test_killed_and_resumed_equals_one_run(tmp_path, name, extra):
    model = dummies.save(name, tmp_path / f"{name}.safetensors")
    src = make_two_shots(tmp_path / "in.mkv")
    ref = tmp_path / "ref.mkv"
    subprocess.run(_cli(src, ref, model, *extra), check=True)
    out = tmp_path / "out.mkv"
    work = work_dir_for(out)
    proc = subprocess.Popen(_cli(src, out, model, *extra, "--batch", "4"), stderr=subprocess.PIPE, text=True)
    while proc.poll() is None:
        try:
            if len(json.loads((work / MANIFEST).read_text())["segments"]) >= 2:
                break
        except (OSError, ValueError, KeyError):
            pass
    proc.kill()
    proc.wait()
    r = subprocess.run(_cli(src, out, model, *extra, "--batch", "4"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    if proc.returncode == -9:  # killed before it finished: the second run resumed
        assert re.search(r"resuming: \d+ frames", r.stderr), r.stderr
    assert frames_of(out) == frames_of(ref) and not work.exists()


class Boom(Exception):
    pass


def test_a_tile_changed_by_out_of_memory_is_recorded_and_resumed_with(tmp_path, monkeypatch, tiny_weights):
    """The manifest says which tile made the segments, and the resumed run goes on with that tile."""
    from vsr.engine import Session

    src = make_two_shots(tmp_path / "in.mkv")
    out = tmp_path / "out.mkv"
    real, calls = Session.upscale_array, [0]

    def flaky(self, arr, **kw):
        calls[0] += 1
        if calls[0] == 3:
            self.engine.learned_tile = 40  # what running out of GPU memory leaves behind
        if calls[0] == 7:
            time.sleep(1.0)  # the encoder finishes the segments before this one
            raise Boom
        return real(self, arr, **kw)

    monkeypatch.setattr(Session, "upscale_array", flaky)
    with pytest.raises(Boom):
        upscale(src, out, options(tiny_weights, batch=2, segment_frames=4))
    manifest = json.loads((work_dir_for(out) / MANIFEST).read_text())
    assert len(manifest["segments"]) == 3 and manifest["identity"]["process"]["tile"] == 40
    monkeypatch.setattr(Session, "upscale_array", real)
    report = upscale(src, out, options(tiny_weights, batch=2, segment_frames=4))
    assert any("resuming: 12 frames" in n for n in report.notes), report.notes
    assert not any("does not match" in n for n in report.notes)
