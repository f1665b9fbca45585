"""Many machines: a folder through a local Ray cluster (`ray start --head`, 2 CPU workers, loopback), each
video spread as one task per segment, gives exactly the outputs of a single-machine run, also when a
worker is killed mid-run. Skipped without Ray (pip install 'vsr[cluster]')."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import media  # noqa: E402

from vsr.cli import main  # noqa: E402
from vsr.video.resume import MANIFEST  # noqa: E402

pytest.importorskip("ray")
RAY = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
# named, not auto: the workers choose without the tests' settings (conftest.py)
OPTS = ["--codec", "ffv1", "--segment-frames", "4", "--quiet", "--deinterlace", "off", "--precision", "fp32",
        "--backend", "torch"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    temp = tmp_path_factory.mktemp("ray")
    start = [RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
             "--include-dashboard=false", "--disable-usage-stats", "--object-store-memory=100000000",
             f"--temp-dir={temp}"]
    r = subprocess.run(start, capture_output=True, text=True, env=env, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    yield f"127.0.0.1:{port}"
    subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, x2) -> Path:
    root = tmp_path_factory.mktemp("tapes")
    (root / "sub").mkdir()
    for i in range(6):
        media.make_mp4(root / ("sub" if i % 2 else "") / f"clip{i}.mp4", width=32 + 4 * i, height=24, frames=40)
    return root


@pytest.fixture(scope="module")
def x2(tmp_path_factory) -> Path:
    from conftest import tiny
    from vsr import weights

    path = tmp_path_factory.mktemp("model") / "tiny-x2.safetensors"
    weights.save(tiny("compact", nf=8, num_conv=2, upscale=2), path)
    return path


def frame_hashes(path: Path) -> list[str]:
    with av.open(str(path)) as c:
        return [hashlib.sha256(f.to_ndarray(format="rgb24").tobytes()).hexdigest() for f in c.decode(video=0)]


def outputs(root: Path) -> dict[str, list[str]]:
    return {str(p.relative_to(root)): frame_hashes(p) for p in sorted(root.rglob("*.mkv"))}


@pytest.fixture(scope="module")
def local(folder, x2, tmp_path_factory) -> dict[str, list[str]]:
    out = tmp_path_factory.mktemp("local") / "out"
    assert main(["upscale", str(folder), "-o", str(out), "--model", str(x2), *OPTS]) == 0
    return outputs(out)


def test_a_folder_on_the_cluster_equals_a_local_run(cluster, folder, x2, local, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["upscale", str(folder), "-o", str(out), "--model", str(x2), *OPTS, "--cluster", cluster,
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["outputs"]) == 6 and report["frames"] == 6 * 40 and not report["failed"]
    assert outputs(out) == local and len(local) == 6
    # each video was spread as 10 segment tasks, then joined
    assert sum("40 frames came from parts computed separately" in n for n in report["notes"]) == 6
    # done outputs are skipped, as in a local run
    assert main(["upscale", str(folder), "-o", str(out), "--model", str(x2), *OPTS, "--cluster", cluster,
                 "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["skipped"]) == 6


def test_a_worker_killed_mid_run_still_gives_the_same_outputs(cluster, folder, x2, local, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "vsr", "upscale", str(folder), "-o", str(out), "--model", str(x2), *OPTS,
           "--cluster", cluster]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    killed = None
    end = time.monotonic() + 120
    while killed is None and time.monotonic() < end and proc.poll() is None:
        # a segment of a video being computed, after others finished: its lock names the worker's process
        for lock in out.rglob(".part_*.vsr-lock"):
            try:
                pid = int(lock.read_text())
            except (OSError, ValueError):
                continue
            own = lock.name[1:].removesuffix(".vsr-lock")
            if any((p / MANIFEST).is_file() for p in lock.parent.glob("part_*") if p.name != own):
                os.kill(pid, signal.SIGKILL)
                killed = pid
                break
        time.sleep(0.01)
    _, err = proc.communicate(timeout=300)
    assert killed is not None, "no worker was caught mid-file"
    assert proc.returncode == 0, err
    assert outputs(out) == local
    assert not list(out.rglob(".*.vsr-work"))  # the retried task finished the killed one's work


def test_no_cluster_at_the_address_is_one_line(folder, x2, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["upscale", str(folder), "-o", str(tmp_path / "out"), "--model", str(x2), *OPTS,
                 "--cluster", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert code == 1 and "cannot reach the Ray cluster" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())

