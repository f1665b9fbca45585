"""vsr serve driven through its HTTP API: a job runs to its output, pauses at a segment's end and resumes,
survives a restart of the server without computing a frame twice, cancels with its work folder; paths out of
the root and calls without the token are refused; the command serves the page and the event stream."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import httpx
import pytest
from fastapi.testclient import TestClient

from vsr.serve.app import create_app, needs_token
from vsr.video.resume import work_dir_for

sys.path.insert(0, str(Path(__file__).resolve().parent))
import media  # noqa: E402

FRAMES = 40
# the fastest settings: the smallest model, no OpenVINO conversion, the quickest encoder preset
JOB = {"path": "tapes/tape.mp4", "model": "compact", "segment_frames": 5, "backend": "torch",
       "encoder_preset": "ultrafast"}


@pytest.fixture(autouse=True)
def _one_thread():
    """The jobs run in the server's thread while the test polls: one torch thread keeps a tiny network's
    frame at milliseconds on a busy machine instead of OpenMP threads waiting on each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def steady(monkeypatch):
    """At least 40 ms a frame however fast the machine, so the test's pause or stop lands mid-video."""
    from vsr.job import Job

    real = Job.restore

    def restore(self, src, dst, *, progress, **kw):
        def slowed(done, total):
            time.sleep(0.04)
            progress(done, total)
        return real(self, src, dst, progress=slowed, **kw)
    monkeypatch.setattr(Job, "restore", restore)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "tapes").mkdir(parents=True)
    media.make_mp4(tmp_path / "root" / "tapes" / "tape.mp4", frames=FRAMES, audio=False)
    return tmp_path / "root"


def client(root: Path, **kw) -> TestClient:
    return TestClient(create_app(root, root.parent / "state", **kw), base_url="http://127.0.0.1")


def job(c: TestClient, job_id: str) -> dict:
    jobs = c.get("/api/jobs").json()["jobs"]
    return next(j for j in jobs if j["id"] == job_id)


def wait(c: TestClient, job_id: str, until, timeout: float = 60.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        j = job(c, job_id)
        if until(j):
            return j
        time.sleep(0.02)
    raise AssertionError(f"job never reached the state wanted: {j}")


def frames_in(path: Path) -> int:
    with av.open(str(path)) as f:
        return sum(1 for _ in f.decode(video=0))


def test_a_job_runs_to_its_output(root, monkeypatch):
    import vsr.projection

    # the projection `vsr upscale` prints for long videos, said here for any
    monkeypatch.setattr(vsr.projection, "SHOW_OVER_S", 0)
    monkeypatch.setattr(vsr.projection, "MEASURE_S", 0)
    with client(root) as c:
        assert "<title>vsr</title>" in c.get("/").text
        assert {"vhs", "dvd"} <= {p["name"] for p in c.get("/api/presets").json()}
        assert "compact" in {m["name"] for m in c.get("/api/models").json()}
        listing = c.get("/api/browse", params={"path": "tapes"}).json()
        assert [e["path"] for e in listing["entries"]] == ["tapes/tape.mp4"] and listing["parent"] == ""
        r = c.post("/api/jobs", json=JOB)
        assert r.status_code == 201, r.text
        done = wait(c, r.json()["ids"][0], lambda j: j["state"] in ("done", "failed"))
        assert done["state"] == "done", done
        out = Path(done["output"])
        assert out == root / "tapes" / "tape_vsr.mp4" and frames_in(out) == FRAMES
        assert done["report"]["frames"] == FRAMES and done["done"] == done["total"] == FRAMES
        assert re.fullmatch(rf"tape.mp4: about \d+ s for {FRAMES} frames \(.* s per frame on \w+\)",
                            done["projection"]), done["projection"]
        assert done["command"][:2] == ["vsr", "upscale"] and "--model" in done["command"]
        assert not work_dir_for(out).exists()
        got = c.get(f"/api/jobs/{done['id']}/output")
        assert got.content == out.read_bytes() and got.headers["content-disposition"].startswith("attachment")
        played = c.get(f"/api/jobs/{done['id']}/output", params={"play": 1})
        assert played.headers["content-disposition"].startswith("inline")
        assert played.headers["content-type"] == "video/mp4"
        assert done["report"]["wall_seconds"] > 0 and done["device"] == "cpu"
        # the `vsr compare` view: the input enlarged plainly against the output, measured and drawn
        shown = c.post(f"/api/jobs/{done['id']}/compare").json()
        assert shown["frames"] == FRAMES and "tape.mp4, bicubic" in shown["table"], shown
        assert "warping error" in shown["table"]
        pictures = {name: c.get(shown[f"{name}_url"]) for name in ("picture", "plot")}
        assert all(r.status_code == 200 and r.content[:4] == b"\x89PNG" for r in pictures.values())
        from vsr import images
        side = images.read_image(root.parent / "state" / "compare" / done["id"] / "side_by_side.png")
        assert side.shape[1] == 2 * 256 + 4
        assert c.delete(f"/api/jobs/{done['id']}").status_code == 200
        assert not (root.parent / "state" / "compare" / done["id"]).exists()


def test_one_job_at_a_time_on_each_device(root, steady):
    """Jobs on one device wait for each other; a job on another device (here one that does not exist, so
    it fails at once) does not wait for them."""
    cpu = {**JOB, "device": "cpu"}
    with client(root) as c:
        first = c.post("/api/jobs", json=cpu).json()["ids"][0]
        second = c.post("/api/jobs", json={**cpu, "output": "second.mkv"}).json()["ids"][0]
        elsewhere = c.post("/api/jobs", json={**cpu, "device": "cuda:7", "output": "gpu.mkv"}).json()["ids"][0]
        failed = wait(c, elsewhere, lambda j: j["state"] == "failed")
        assert failed["device"] == "cuda:7" and "cuda:7" in failed["error"]
        assert job(c, first)["state"] == "running" and job(c, second)["state"] == "queued"
        end = time.monotonic() + 60
        while time.monotonic() < end:
            snapshot = {j["id"]: j["state"] for j in c.get("/api/jobs").json()["jobs"]}  # one moment
            states = [snapshot[first], snapshot[second]]
            assert states != ["running", "running"]
            if states == ["done", "done"]:
                break
            time.sleep(0.02)
        assert states == ["done", "done"]


def test_pause_resume_and_a_restart_compute_no_frame_twice(root, steady):
    with client(root) as c:
        job_id = c.post("/api/jobs", json=JOB).json()["ids"][0]
        wait(c, job_id, lambda j: j["done"] >= 2)
        assert c.post(f"/api/jobs/{job_id}/pause").status_code == 200
        paused = wait(c, job_id, lambda j: j["state"] != "running")
        assert paused["state"] == "paused", paused
        # it stopped where a segment ends: every frame done is kept in the work folder
        assert paused["done"] % 5 == 0 and 0 < paused["done"] < FRAMES
        out = root / "tapes" / "tape_vsr.mp4"
        manifest = json.loads((work_dir_for(out) / "manifest.json").read_text())
        assert sum(s["frames"] for s in manifest["segments"]) == paused["done"]
        assert c.post(f"/api/jobs/{job_id}/resume").status_code == 200
        wait(c, job_id, lambda j: j["state"] == "running" and j["done"] >= paused["done"] + 7)
    # the server stopped mid-job (leaving the client stops it): the job waits, its segments kept
    state = json.loads((root.parent / "state" / "queue.json").read_text())
    assert [j["state"] for j in state["jobs"]] == ["queued"]
    kept = json.loads((work_dir_for(out) / "manifest.json").read_text())
    kept_frames = sum(s["frames"] for s in kept["segments"])
    assert kept_frames >= paused["done"] + 5
    with client(root) as c:  # a new server on the same state continues it
        done = wait(c, job_id, lambda j: j["state"] in ("done", "failed"))
    assert done["state"] == "done", done
    assert f"{kept_frames} of {FRAMES} frames came from the earlier, interrupted run" in done["note"]
    assert frames_in(out) == FRAMES and not work_dir_for(out).exists()


def test_cancel_removes_the_work_folder(root, steady):
    with client(root) as c:
        first = c.post("/api/jobs", json=JOB).json()["ids"][0]
        second = c.post("/api/jobs", json={**JOB, "output": "tapes/other.mkv"}).json()["ids"][0]
        wait(c, first, lambda j: j["done"] >= 6)  # a segment is in the work folder
        assert work_dir_for(root / "tapes" / "tape_vsr.mp4").exists()
        assert c.post(f"/api/jobs/{second}/cancel").json() == {"id": second}  # still queued
        c.post(f"/api/jobs/{first}/cancel")
        cancelled = wait(c, first, lambda j: j["state"] != "running")
        assert cancelled["state"] == "cancelled" and job(c, second)["state"] == "cancelled"
        assert not (root / "tapes" / "tape_vsr.mp4").exists() and not (root / "tapes" / "other.mkv").exists()
        assert not work_dir_for(root / "tapes" / "tape_vsr.mp4").exists()
        assert c.post(f"/api/jobs/{first}/pause").status_code == 400  # nothing left to pause
        assert c.delete(f"/api/jobs/{first}").status_code == 200
        assert [j["id"] for j in c.get("/api/jobs").json()["jobs"]] == [second]


def test_paths_outside_the_root_are_refused(root, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    media.make_mp4(secret / "private.mp4", frames=2, audio=False)
    os.symlink(secret, root / "link-out")
    os.symlink(root / "tapes", root / "link-in")
    with client(root) as c:
        names = [e["name"] for e in c.get("/api/browse").json()["entries"]]
        assert names == ["link-in", "tapes"]  # the link that leaves the root is not shown
        for path in ("..", "../secret", "tapes/../../secret", "/etc", "link-out", "link-out/private.mp4"):
            r = c.get("/api/browse", params={"path": path})
            assert r.status_code == 403, (path, r.text)
        assert c.post("/api/jobs", json={**JOB, "path": "link-out/private.mp4"}).status_code == 403
        assert c.post("/api/jobs", json={**JOB, "output": "../stolen.mp4"}).status_code == 403
        assert c.get("/api/browse", params={"path": "link-in"}).json()["entries"][0]["name"] == "tape.mp4"
        # refusals of options are one line each, and nothing is queued
        bad = c.post("/api/jobs", json={**JOB, "model": "nosuch"})
        assert bad.status_code == 400 and "unknown model 'nosuch'" in bad.json()["detail"]
        bad = c.post("/api/jobs", json={**JOB, "codec": "ffv1", "crf": 10})
        assert bad.status_code == 400 and "ffv1 takes no --crf" in bad.json()["detail"]
        assert c.post("/api/jobs", json={**JOB, "shell": "rm -rf /"}).status_code == 422
        (root / "notes.txt").write_text("x")
        assert c.post("/api/jobs", json={**JOB, "path": "notes.txt"}).status_code == 400
        assert c.get("/api/jobs").json()["jobs"] == []


def test_a_token_is_asked_of_every_api_call_off_this_machine(root):
    assert needs_token("0.0.0.0") and needs_token("192.168.1.5") and not needs_token("127.0.0.1")
    with client(root, token="s3cret", local=False) as c:
        assert c.get("/").status_code == 200  # the page itself holds nothing: it asks for the token
        assert c.get("/api/jobs").status_code == 401
        assert c.get("/api/browse", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/api/jobs", json=JOB).status_code == 401
        assert c.get("/api/jobs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/api/jobs", params={"token": "s3cret"}).status_code == 200
    with client(root) as c:  # a local server answers only the loopback names (a rebinding page gets nothing)
        assert c.get("/api/jobs", headers={"Host": "evil.example"}).status_code == 400


def test_the_command_serves_the_page_and_the_event_stream(root, tmp_path):
    """A real server: the page with nothing from elsewhere, a job's progress as server-sent events at least
    every 2 s from its first frame to its last, and Ctrl-C."""
    import socket

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    with socket.socket() as s:  # a free port: bind to 0 and let it go
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "vsr", "serve", "--root", str(root), "--port", str(port),
                             "--state", str(tmp_path / "state")], stdout=subprocess.PIPE, text=True, env=env)
    try:
        address = re.search(r"http://\S+", proc.stdout.readline()).group(0)
        assert address == f"http://127.0.0.1:{port}/"
        with httpx.Client(base_url=address, timeout=30) as http:
            for _ in range(200):  # the server starts listening just after it prints
                try:
                    page = http.get("/")
                    break
                except httpx.ConnectError:
                    time.sleep(0.05)
            head, script = page.text.split("<script>")
            assert page.status_code == 200 and "EventSource" in script
            assert not re.search(r"(src|href)=\"?(https?:)?//", page.text)  # no asset from elsewhere
            seen = []  # (time, frames done, state) of each event
            with http.stream("GET", "/api/events") as events:
                lines = events.iter_lines()
                first = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
                assert first["jobs"] == []
                assert http.post("/api/jobs", json=JOB).status_code == 201
                for line in lines:
                    if line.startswith("data: "):
                        j = json.loads(line[6:])["jobs"][0]
                        seen.append((time.monotonic(), j["done"], j["state"]))
                        if j["state"] in ("done", "failed"):
                            break
        assert seen[-1][1:] == (FRAMES, "done"), seen[-1]
        frames = [t for t, done, state in seen if done > 0]  # from the first frame done to the end
        gaps = [b - a for a, b in zip(frames, frames[1:])]
        assert len(frames) >= 2 and max(gaps) < 2.0, gaps
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0


def test_a_preview_restores_the_frame_at_the_chosen_time(root):
    from vsr import images

    with client(root) as c:
        r = c.post("/api/preview", json={**JOB, "at": 0.6, "crf": 30})
        assert r.status_code == 200, r.text
        shown = r.json()
        assert shown["before"] == [64, 48] and shown["after"] == [256, 192]
        # the whole file's time at the pace of the preview's frames, as vsr upscale would say it
        assert re.fullmatch(rf"tape.mp4: about \d+ s for {FRAMES} frames \(.* s per frame on \w+\)",
                            shown["projection"]), shown["projection"]
        folder = root.parent / "state" / "previews" / shown["id"]
        for name in ("before", "after"):
            png = c.get(shown[f"{name}_url"])
            assert png.status_code == 200 and png.content == (folder / f"{name}.png").read_bytes()
        # the input frame shown is the one at 0.6 s (frame 15 of the 25 frame/s clip), not the first
        with av.open(str(root / "tapes" / "tape.mp4")) as f:
            frames = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
        before = images.read_image(folder / "before.png").astype(float)
        errors = [abs(before - fr).mean() for fr in frames]
        assert min(range(len(frames)), key=errors.__getitem__) == 15
        late = c.post("/api/preview", json={**JOB, "at": 60})
        assert late.status_code == 400 and "choose a time within the clip" in late.json()["detail"]
        assert c.get(f"/api/preview/{shown['id']}/../../queue.json").status_code == 404
        assert c.get("/api/jobs").json()["jobs"] == []  # a preview is no job


def test_a_folder_in_the_order_chosen_and_a_failed_file_does_not_stop_the_queue(root, steady):
    from vsr.errors import VsrError
    from vsr.serve.jobqueue import JobQueue

    (root / "tapes" / "broken.mp4").write_bytes(b"not a video at all" * 100)
    with client(root) as c:
        with pytest.raises(VsrError, match="another vsr serve keeps its queue"):
            JobQueue(root.parent / "state")  # one server per queue
        first = c.post("/api/jobs", json={**JOB, "output": "first.mkv"}).json()["ids"][0]
        broken, tape = c.post("/api/jobs", json={**JOB, "path": "tapes", "max_frames": 5}).json()["ids"]
        assert [job(c, i)["src"].rsplit("/", 1)[1] for i in (broken, tape)] == ["broken.mp4", "tape.mp4"]
        c.post(f"/api/jobs/{tape}/up")
        assert [j["id"] for j in c.get("/api/jobs").json()["jobs"]] == [first, tape, broken]
        ended: list[str] = []
        end = time.monotonic() + 60
        while len(ended) < 3 and time.monotonic() < end:
            for j in c.get("/api/jobs").json()["jobs"]:
                if j["state"] in ("done", "failed") and j["id"] not in ended:
                    ended.append(j["id"])
            time.sleep(0.02)
        assert ended == [first, tape, broken]
        failed, done = job(c, broken), job(c, tape)
        assert failed["state"] == "failed" and failed["error"] and "\n" not in failed["error"]
        assert done["state"] == "done" and frames_in(Path(done["output"])) == 5


def test_an_upload_makes_a_new_file_and_overwrites_nothing(root):
    clip = (root / "tapes" / "tape.mp4").read_bytes()
    with TestClient(create_app(root, root.parent / "state", upload_limit=len(clip)),
                    base_url="http://127.0.0.1") as c:
        first = c.post("/api/upload", params={"name": "tape.mp4"}, content=clip)
        again = c.post("/api/upload", params={"name": "../../tape.mp4"}, content=clip[:100])
        assert (first.status_code, again.status_code) == (201, 201)
        assert [first.json()["path"], again.json()["path"]] == ["vsr-uploads/tape.mp4", "vsr-uploads/tape-1.mp4"]
        assert (root / "vsr-uploads" / "tape.mp4").read_bytes() == clip  # the second did not overwrite it
        assert (root / "vsr-uploads" / "tape-1.mp4").read_bytes() == clip[:100]
        big = c.post("/api/upload", params={"name": "big.mp4"}, content=clip + b"x")
        assert big.status_code == 413 and "upload limit" in big.json()["detail"]
        assert c.post("/api/upload", params={"name": "run.sh"}, content=b"echo").status_code == 400
        assert sorted(p.name for p in (root / "vsr-uploads").iterdir()) == ["tape-1.mp4", "tape.mp4"]
        # another site's page in the same browser changes nothing
        sent = c.post("/api/upload", params={"name": "x.mp4"}, content=b"x", headers={"Origin": "http://evil.example"})
        assert sent.status_code == 403
        assert c.post("/api/jobs", json={**JOB, "path": "vsr-uploads/tape.mp4"},
                      headers={"Origin": "http://127.0.0.1"}).status_code == 201
