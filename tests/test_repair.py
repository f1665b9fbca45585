"""Tape repair: defects put on a moving picture at known places (vsr.train.tape) are measured and undone; clean
footage comes through bit for bit; a resumed run repairs exactly as an uninterrupted one."""
from __future__ import annotations

import json
import os
import queue
import threading
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from skimage import data

import media
from vsr.cli import main
from vsr.train import tape
from vsr.video import IngestOptions, VideoOptions, ingest, probe, transcode
from vsr.video.decode import Decoder, StartPoint
from vsr.video.mend import head_switching_band, measure_chroma_delay, repair_head_switching, yuv_planes
from vsr.video.repair import RepairOptions, RepairPlan, RepairStage, plan_repair

W, H = 320, 240


def pan(frames: int, *, seed: int = 0, photo: np.ndarray | None = None) -> list[np.ndarray]:
    """A camera moving across a photograph (scikit-image's coffee, enlarged): Y, U, V planes of W x H."""
    photo = cv2.resize(data.coffee() if photo is None else photo, (960, 640), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(seed)
    vx, vy = rng.uniform(-2.5, 2.5, 2)
    x0, y0 = 150 + rng.uniform(0, 100), 100 + rng.uniform(0, 80)
    return [tape.yuv(cv2.warpAffine(photo, np.float32([[1, 0, x0 + vx * i], [0, 1, y0 + vy * i]]), (W, H),
                                    flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)) for i in range(frames)]


def decoded(path: Path) -> list[np.ndarray]:
    """A video's frames as Y, U, V planes."""
    with av.open(str(path)) as c:
        return [yuv_planes(f) for f in c.decode(video=0)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255 ** 2 / max(1e-6, np.mean((a - b) ** 2))))


@pytest.mark.parametrize("dx,dy", [(-2.75, 0.0), (1.5, 1.0), (3.0, -0.5)])
def test_chroma_delay_is_measured_within_a_quarter_pixel(dx, dy):
    clean = pan(3, seed=1)
    own = measure_chroma_delay([np.round(f) for f in clean])  # the photograph's own chroma siting
    assert max(map(abs, own)) <= 0.5, own
    got = measure_chroma_delay([np.round(tape.chroma_delay(f, dx, dy)) for f in clean])
    assert abs(got[0] - own[0] - dx) <= 0.25 and abs(got[1] - own[1] - dy) <= 0.25, (got, own)


def test_chroma_delay_is_measured_again_where_the_recording_changes(tmp_path, capsys, monkeypatch):
    """Two recordings on one tape, made on decks that delay chroma differently: each stretch gets its own."""
    monkeypatch.setattr(ingest, "LONG_CLIP", 2.0)  # s: this clip is 2.4 s long
    first = [np.round(tape.chroma_delay(f, 2.5, 0.0)) for f in pan(30, seed=1)]
    second = [np.round(tape.chroma_delay(f, -1.5, 0.0)) for f in pan(30, seed=2, photo=data.astronaut())]
    src = tape.write(tmp_path / "two decks.mkv", first + second)
    out = tmp_path / "mended.mkv"
    assert main(["repair", str(src), "-o", str(out), "--repair", "chroma-delay", "--codec", "ffv1",
                 "--pix-fmt", "yuv444p", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)["repairs"]
    (t0, *d0), (t1, *d1) = r["chroma_delay_parts"]
    assert r["chroma_delay"] is None and t0 == 0.0 and abs(t1 - 1.2) < 0.05, r
    assert abs(d0[0] - 2.5) <= 0.3 and abs(d1[0] + 1.5) <= 0.3 and max(abs(d0[1]), abs(d1[1])) <= 0.3, r
    clean = pan(30, seed=1) + pan(30, seed=2, photo=data.astronaut())
    got, hit = decoded(out), first + second
    for i in (5, 45):  # each recording's chroma closer to the clean picture than before
        assert psnr(got[i][8:-8, 8:-8, 1:], clean[i][8:-8, 8:-8, 1:]) > psnr(hit[i][8:-8, 8:-8, 1:],
                                                                              clean[i][8:-8, 8:-8, 1:]) + 3


def test_dropouts_are_filled_from_the_neighbouring_frames():
    clean = pan(8, seed=2)
    rng = np.random.default_rng(3)
    hit, masks = zip(*(tape.dropouts(f, 1, rng) for f in clean))
    stage = RepairStage(RepairPlan(dropouts=True))
    out = [f for i, f in enumerate(hit) for f in stage.push(i, tape.rgb(f))] + stage.flush()
    assert [i for i, _, _ in out] == list(range(8))  # every frame, in order
    # streaks that stand out by more than the stage's own threshold (40 levels; not black on black)
    shows = [np.abs(h[..., 0][m] - c[..., 0][m]).mean() > 40 for m, c, h in zip(masks, clean, hit)]
    assert sum(shows) >= 4 and sum(n for _, _, n in out) >= sum(shows)
    gains = [psnr(tape.yuv(o)[..., 0][m], c[..., 0][m]) - psnr(h[..., 0][m], c[..., 0][m])
             for (_, o, _), m, c, h, show in zip(out, masks, clean, hit, shows) if show]
    # every streak mended; most all but exactly (a noisy one over a bright part of the picture is partly hidden)
    assert min(gains) > 6 and np.median(gains) > 15, gains
    stage = RepairStage(RepairPlan(dropouts=True))  # clean footage: nothing to fill, every pixel kept
    pictures = [tape.rgb(f) for f in clean]
    out = [f for i, f in enumerate(pictures) for f in stage.push(i, f)] + stage.flush()
    assert all(n == 0 and np.array_equal(o, c) for (_, o, n), c in zip(out, pictures))


def decode_frames(info, plan, *, segment_frames: int, start: StartPoint | None = None) -> list[tuple[int, bytes]]:
    """(pts, picture) of each frame the decoder hands on, from ``start`` (a resume point) or the first."""
    q: queue.Queue = queue.Queue()
    dec = Decoder(info, q, threading.Event(), batch_size=2, max_frames=None, high_bit_depth=False,
                  source=info, ingest=plan, segment_frames=segment_frames, start=start)
    dec._decode()
    return [(p, f.tobytes()) for b in q.queue for p, f in zip(b.pts, b.frames)]


def run_stage(plan: RepairPlan, clip: list[np.ndarray]) -> list[np.ndarray]:
    stage = RepairStage(plan)
    out = [f for i, planes in enumerate(clip) for f in stage.push(i, tape.rgb(planes))] + stage.flush()
    assert [i for i, _, _ in out] == list(range(len(clip)))
    return [tape.yuv(f) for _, f, _ in out]


def test_chroma_noise_is_found_and_averaged_away_luma_kept():
    clean = pan(6, seed=4)
    rng = np.random.default_rng(5)
    noisy = [np.round(tape.chroma_noise(f, 4.0, rng)) for f in clean]
    assert plan_repair(RepairOptions("auto"), noisy).chroma_noise
    assert not plan_repair(RepairOptions("auto"), clean).chroma_noise
    out = run_stage(RepairPlan(chroma_noise=True), noisy)
    before = tape.yuv(tape.rgb(noisy[2]))  # as decoded, before the stage
    assert psnr(out[2][..., 1:], clean[2][..., 1:]) > psnr(before[..., 1:], clean[2][..., 1:]) + 4.0
    assert np.abs(out[2][..., 0] - before[..., 0]).max() <= 1.0  # luma: rounding only


def test_line_jitter_is_found_and_undone():
    clean = pan(7, seed=6)
    rng = np.random.default_rng(7)
    shaky = [np.round(tape.line_jitter(f, 1.0, rng)[0]) for f in clean]
    plan = plan_repair(RepairOptions("jitter"), shaky[:1], [shaky[:5], shaky[2:]])
    assert plan.jitter and plan.jitter > 0.3, plan
    assert plan_repair(RepairOptions("jitter"), clean[:1], [clean[:5], clean[2:]]).jitter is None
    out = run_stage(plan, shaky)
    inner = (slice(4, -4), slice(16, -16))
    gain = [psnr(o[inner][..., 0], c[inner][..., 0]) - psnr(s[inner][..., 0], c[inner][..., 0])
            for o, s, c in zip(out[1:-1], shaky[1:-1], clean[1:-1])]
    assert min(gain) > 2.0, gain


def test_head_switching_band_is_measured_and_mended():
    clean = pan(4, seed=4)
    rng = np.random.default_rng(5)
    torn = [tape.head_switching(f, 8, 20, rng) for f in clean]
    rows = head_switching_band([f[..., 0] for f in torn])
    assert 4 <= rows <= 9 and head_switching_band([f[..., 0] for f in clean]) == 0
    for c, t in zip(clean, torn):
        before = psnr(t[-16:, :, 0], c[-16:, :, 0])
        after = psnr(tape.yuv(repair_head_switching(tape.rgb(t), rows))[-16:, :, 0], c[-16:, :, 0])
        assert after > before + 2, (before, after)


def tape_clip(path: Path, frames: int = 12) -> tuple[Path, list[np.ndarray]]:
    clean = pan(frames, seed=6)
    rng = np.random.default_rng(7)
    bad = [tape.dropouts(tape.chroma_delay(f, 2.5, 0.0), 1, rng)[0] for f in clean]
    return tape.write(path, [tape.head_switching(f, 8, 16, rng) for f in bad]), clean


def test_vsr_repair_measures_reports_and_mends(tmp_path, capsys):
    src, clean = tape_clip(tmp_path / "tape.mkv")
    out = tmp_path / "mended.mkv"
    assert main(["repair", str(src), "-o", str(out), "--codec", "ffv1", "--pix-fmt", "yuv444p", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    r = report["repairs"]
    assert abs(r["chroma_delay"][0] - 2.5) <= 0.3 and abs(r["chroma_delay"][1]) <= 0.3, r
    assert r["dropouts_filled"] >= 10 and r["head_switching_lines"] >= 4, r
    assert r["repeated_frames"] == [] and r["gaps"] == [] and r["chroma_noise"] is False
    got, before = decoded(out), decoded(src)
    assert len(got) == len(clean)
    body = slice(8, -20)  # away from the band and the picture's edges
    gain = np.mean([psnr(g[body], c[body]) - psnr(b[body], c[body]) for g, b, c in zip(got, before, clean)])
    assert gain > 1.0, gain


def capture(path: Path) -> tuple[Path, list[int]]:
    """A capture that repeated a frame (exactly, at 0.12 s, and once coded again with a little loss, at
    0.24 s) and dropped two (a gap before 0.36 s): the file and its frames' timestamps (1/25 s)."""
    clip = pan(10, seed=8)
    rng = np.random.default_rng(9)
    clip[3] = clip[2].copy()
    clip[6] = np.clip(clip[5] + rng.normal(0, 0.4, clip[5].shape), 0, 255).astype(np.float32)
    pts = [0, 1, 2, 3, 4, 5, 6, 9, 10, 11]
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt, s.codec_context.time_base = W, H, "yuv444p", Fraction(1, 25)
        for planes, t in zip(clip, pts):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(
                np.clip(planes + 0.5, 0, 255).astype(np.uint8).transpose(2, 0, 1)), format="yuv444p")
            frame.pts, frame.time_base = t, Fraction(1, 25)
            c.mux(s.encode(frame))
        c.mux(s.encode(None))
    return path, pts


def times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [round(float(f.time), 2) for f in c.decode(video=0)]


def test_repeated_frames_and_gaps_are_reported_with_their_times(tmp_path, capsys):
    src, pts = capture(tmp_path / "capture.mkv")
    out = tmp_path / "mended.mkv"
    assert main(["repair", str(src), "-o", str(out), "--repair", "dropouts", "--codec", "ffv1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)["repairs"]
    assert r["repeated_frames"] == [0.12, 0.24] and r["gaps"] == [0.36], r
    assert times(out) == [t / 25 for t in pts]  # every frame and timestamp kept


def test_drop_repeats_leaves_them_out_keeping_the_other_timestamps(tmp_path, capsys):
    src, pts = capture(tmp_path / "capture.mkv")
    out = tmp_path / "dropped.mkv"
    assert main(["repair", str(src), "-o", str(out), "--drop-repeats", "--repair", "chroma-delay", "--codec", "ffv1",
                 "--json"]) == 0  # a repair that finds nothing here: the repeats are still left out
    r = json.loads(capsys.readouterr().out)["repairs"]
    assert r["repeated_frames"] == [0.12, 0.24] and r["repeats_dropped"] == 2 and r["gaps"] == [0.36], r
    assert times(out) == [t / 25 for t in pts if t not in (3, 6)]
    # a resumed decode leaves out the same frames
    info = probe(src)
    plan = ingest.resolve(IngestOptions(repair=RepairOptions(mode="dropouts", drop_repeats=True)), info, scale=1)

    full = decode_frames(info, plan, segment_frames=3)
    assert [round(float(p * info.time_base), 2) for p, _ in full] == [t / 25 for t in pts if t not in (3, 6)]
    for k in (3, 5):
        assert decode_frames(info, plan, segment_frames=3, start=StartPoint(index=k, after_pts=full[k - 1][0])) \
            == full[k:]
    assert main(["upscale", str(src), "--drop-repeats", "-o", str(tmp_path / "x.mkv")]) == 1
    assert "--drop-repeats needs tape repair on" in capsys.readouterr().err


def test_vsr_repair_mends_a_folder_and_reports_each_video(tmp_path, capsys):
    folder = tmp_path / "tapes"
    (folder / "side b").mkdir(parents=True)
    tape_clip(folder / "tape.mkv", frames=6)
    tape_clip(folder / "side b" / "tape.mkv", frames=6)
    cv2.imwrite(str(folder / "label.png"), np.zeros((8, 8, 3), np.uint8))  # not a video: left alone
    (folder / "broken.mkv").write_bytes(b"not a video")
    out = tmp_path / "mended"
    assert main(["repair", str(folder), "-o", str(out), "--codec", "ffv1", "--json"]) == 1  # one file failed
    report = json.loads(capsys.readouterr().out)
    assert sorted(Path(p).relative_to(out).as_posix() for p in report["outputs"]) == ["side b/tape.mkv", "tape.mkv"]
    assert list(report["failed"]) == [str(folder / "broken.mkv")]
    assert set(report["repairs"]) == {str(folder / "tape.mkv"), str(folder / "side b" / "tape.mkv")}
    assert all(r["dropouts_filled"] >= 3 for r in report["repairs"].values()), report["repairs"]
    assert not (out / "label.png").exists()
    # again: both finished, skipped
    main(["repair", str(folder), "-o", str(out), "--codec", "ffv1", "--json"])
    assert len(json.loads(capsys.readouterr().out)["skipped"]) == 2


SHARED_VIDEO = Path(os.environ.get("VSR_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data") / "video"


@pytest.mark.parametrize("clip", ["pan", "testsrc2", "tree.avi"])
def test_repair_auto_changes_nothing_on_clean_footage(tmp_path, capsys, clip):
    """A generated pan, ffmpeg's test picture (flat colours: chroma exactly affine in luma), and real
    footage (a webcam's, whose frames come at an irregular rate)."""
    if clip == "pan":
        src = tape.write(tmp_path / "clean.mkv", pan(10, seed=8))
    elif clip == "testsrc2":
        src = media.make_clip(tmp_path / "clean.mp4", seconds=2, width=160, height=120)
    else:
        src = SHARED_VIDEO / clip
        if not src.is_file():
            pytest.skip(f"{src} is not here (set VSR_DATA)")
    outs = {}
    for mode in ("off", "auto"):
        outs[mode] = tmp_path / f"{mode}.mkv"
        assert main(["repair", str(src), "-o", str(outs[mode]), "--repair", mode, "--codec", "ffv1", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
    assert report["repairs"] == {"chroma_delay": None, "dropouts_filled": 0, "head_switching_lines": 0,
                                 "chroma_noise": False, "jitter_px": None, "repeated_frames": [], "gaps": []}
    assert decoded(outs["off"]) and all(np.array_equal(a, b) for a, b in zip(decoded(outs["off"]),
                                                                             decoded(outs["auto"])))


@pytest.mark.parametrize("args,message", [
    (["--chroma-delay", "40,0"], "give values within +-8"),
    (["--repair", "dropouts,wobble"], "unknown repair 'wobble'"),
])
def test_bad_repair_options_are_one_line_and_write_nothing(tmp_path, capsys, args, message):
    src = tape.write(tmp_path / "clean.mkv", pan(3))
    assert main(["repair", str(src), "-o", str(tmp_path / "out.mkv"), *args]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.mkv"]


def test_a_resumed_decode_repairs_exactly_as_a_full_one(tmp_path):
    """The frame before a resume point is decoded again for the repair of the first frame after it."""
    src, _ = tape_clip(tmp_path / "tape.mkv", frames=16)
    info = probe(src)
    plan = ingest.resolve(IngestOptions(repair=RepairOptions(mode="auto")), info, scale=1)
    assert plan.repair.dropouts and plan.repair.chroma_delay

    for plan in (plan, replace(plan, repair=replace(plan.repair, chroma_noise=True))):  # 1, 2 frames either side
        full = decode_frames(info, plan, segment_frames=5)
        assert decode_frames(info, plan, segment_frames=5, start=StartPoint(index=10, after_pts=full[9][0])) \
            == full[10:]
    opts = VideoOptions(codec="ffv1", quiet=True, resume=True, batch_size=2,
                        ingest=IngestOptions(repair=RepairOptions("auto")))
    ref = transcode(src, tmp_path / "ref.mkv", lambda x, *_: x, 1, opts, segment_frames=5)
    calls = []

    def failing(x, *_):
        calls.append(1)
        if len(calls) > 4:  # two segments of five frames, in batches of two, then it stops
            raise KeyboardInterrupt
        return x

    with pytest.raises(KeyboardInterrupt):
        transcode(src, tmp_path / "out.mkv", failing, 1, opts, segment_frames=5)
    res = transcode(src, tmp_path / "out.mkv", lambda x, *_: x, 1, opts, segment_frames=5)
    assert any("resuming" in n for n in res.notes) and res.repairs["dropouts_filled"] < ref.repairs["dropouts_filled"]
    with av.open(str(ref.output)) as a, av.open(str(res.output)) as b:
        assert [f.to_ndarray().tobytes() for f in a.decode(video=0)] == \
            [f.to_ndarray().tobytes() for f in b.decode(video=0)]
