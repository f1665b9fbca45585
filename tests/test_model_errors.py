"""A weights file or model card whose network parameters are malformed, unknown or impossible: one line
that names the file, never "internal error", and nothing written."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from vsr import weights
from vsr.cli import main
from vsr.images import write_image

from conftest import tiny


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "in.png"
    write_image(path, (np.random.default_rng(0).random((12, 10, 3)) * 255).astype(np.uint8))
    return path


def compact_sd() -> dict[str, torch.Tensor]:
    return tiny("compact", nf=4, num_conv=1, upscale=2).model.state_dict()


def with_params(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "net.safetensors"
    save_file({k: v.contiguous() for k, v in compact_sd().items()}, str(path), metadata={"vsr.params": text})
    return path


def one_line_error(capsys, image: Path, model: str, *what: str) -> None:
    out = image.with_name("out.png")
    assert main(["upscale", str(image), "-o", str(out), "--model", model, "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("vsr: error: "), err
    assert "internal error" not in err, err
    for w in what:
        assert w in err, err
    assert not out.exists() and not list(image.parent.glob("*.partial*"))


@pytest.mark.parametrize("text,what", [
    ("{not json", "not a JSON object"),
    ("[4]", "not a JSON object"),
    ('{"bogus": 1}', "bogus"),
    ('{"upscale": 7}', "upscale"),  # the compact network does x1 to x4
    ('{"nf": -3}', "cannot be built"),
])
def test_bad_params_in_a_weights_file(tmp_path, image, capsys, text, what):
    path = with_params(tmp_path, text)
    one_line_error(capsys, image, str(path), str(path), what)


def test_impossible_shapes_in_a_weights_file(tmp_path, image, capsys):
    sd = tiny("rrdb", nf=8, nb=1, gc=4, scale=4).model.state_dict()
    sd["conv_first.weight"] = torch.zeros(8, 5, 3, 3)  # 5 input channels: no RRDB has them
    path = tmp_path / "odd.safetensors"
    weights.save(sd, path)
    one_line_error(capsys, image, str(path), str(path), "input channels")


@pytest.mark.parametrize("params,what", [({"out_scale": "big"}, "params"), ({"upscale": 9}, "params"),
                                         ({"colour": True}, "colour"), (5, "must be a mapping")])
def test_bad_params_in_a_model_card(tmp_path, image, capsys, monkeypatch, params, what):
    models = tmp_path / "models"
    models.mkdir()
    weights.save(compact_sd(), models / "bad.safetensors")
    card = {"name": "bad", "architecture": "compact", "scale": 2, "weights": "bad.safetensors",
            "license": "BSD-3-Clause", "source": "test", "params": params}
    (models / "bad.yml").write_text(yaml.safe_dump(card))
    monkeypatch.setenv("VSR_MODELS", str(models))
    one_line_error(capsys, image, "bad", str(models / "bad.yml"), what)


def test_good_params_still_apply(tmp_path):
    path = with_params(tmp_path, json.dumps({"out_scale": 0.75}))
    from vsr import zoo

    assert zoo.resolve(str(path))[0].scale == pytest.approx(1.5)
