"""``torchrun --nproc_per_node 2`` on the CPU (gloo): the loss matches one process with the whole batch."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vsr.train.config import load_recipe
from vsr.train.loop import train

from test_train_config import recipe, write_frames

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind", ["patches", "clips"])
def test_two_processes_match_one(tmp_path, kind):
    from test_pingpong import CLIPS

    changes = copy.deepcopy(CLIPS) if kind == "clips" else {}  # clips: the recurrent generator, ping-pong
    frames = write_frames(tmp_path / "frames", size=160 if kind == "clips" else 96)
    single = train(load_recipe(recipe(tmp_path, **{**copy.deepcopy(changes), "data.batch": 4})), progress=False)

    (tmp_path / "ddp").mkdir()
    (tmp_path / "ddp" / "frames").symlink_to(frames)
    path = recipe(tmp_path / "ddp", **{**changes, "data.batch": 2})  # 2 processes x 2 = the same total batch
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "vsr.train.cli", "train", str(path), "--quiet"],
                          env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    if proc.returncode != 0 and "gloo" in proc.stderr.lower() and "not available" in proc.stderr.lower():
        pytest.skip("this torch build has no gloo backend")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(x) for x in (tmp_path / "ddp" / "run" / "metrics.jsonl").read_text().splitlines()]
    ddp_losses = [x["generator/total"] for x in lines if "generator/total" in x]
    one = [x["generator/total"] for x in single.losses]
    assert len(ddp_losses) == len(one) == 6
    print("single process:", [round(v, 6) for v in one])
    print("2 processes:   ", [round(v, 6) for v in ddp_losses])
    for a, b in zip(one, ddp_losses):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), (one, ddp_losses)
    val = [x for x in lines if "val/psnr_y" in x]
    assert abs(val[-1]["val/psnr_y"] - single.metrics["psnr_y"]) < 1e-3
