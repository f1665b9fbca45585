"""Training SRFlow with the shared trainer: the likelihood trains, the encoder starts from an RRDB and
stays frozen until the recipe's step, ActNorms are initialised once from data (and never again on
resume), the exported model upscales, and recipe mistakes are one line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vsr import arch, images, metrics, weights, zoo
from vsr.arch.srflow import SRFlowNet, layers
from vsr.cli import main
from vsr.engine import Upscaler
from vsr.errors import VsrError
from vsr.train import ddp, losses
from vsr.train.config import load_recipe
from vsr.train.data import load_frames, validation_set
from vsr.train.loop import train

from conftest import TINY
from test_train_config import recipe, write_frames

FLOW = {k: v for k, v in TINY["srflow"][0].items() if k not in ("nf", "nb", "gc")}  # those come from the RRDB
RRDB = dict(nf=8, nb=3, gc=4, scale=4)


pytestmark = pytest.mark.usefixtures("one_thread")


def _rrdb_file(folder: Path) -> Path:
    """A tiny RRDBNet, as an L1-trained ESRGAN would be (training stage 1)."""
    path = folder / "rrdb.safetensors"
    if not path.is_file():
        torch.manual_seed(0)
        weights.save(arch.build("rrdb", **RRDB), path)
    return path


def _cfg(tmp_path: Path, *, net: dict | None = None, **changes):
    if not (tmp_path / "frames").exists():
        write_frames(tmp_path / "frames")
    generator = {"arch": "srflow", "params": FLOW, "ema": 0.9, "init_encoder": str(_rrdb_file(tmp_path)),
                 "freeze_encoder_until": 3, **(net or {})}
    return load_recipe(recipe(tmp_path, **{
        "networks.generator": generator,
        "steps": [{"network": "generator", "losses": ["nll"], "optimizer": {"lr": 2e-3}, "clip_grad": 10.0}],
        "losses": {"nll": {"type": "nll"}}, **changes}))


class Recorder:
    """What the generator looks like at each NLL evaluation of the loop."""

    def __init__(self, monkeypatch) -> None:
        self.calls: list[dict] = []
        self.inits: list[int] = []
        self.actnorm_inits = 0
        plain_nll, plain_init, plain_actnorm = losses.nll, SRFlowNet.initialize_actnorms, layers.ActNorm._initialize

        def nll(flow, hr, lr, *, quant):
            m = ddp.unwrap(flow)
            enc = [p for n, p in m.named_parameters() if n.startswith("encoder.")]
            self.calls.append({"encoder_grad": any(p.requires_grad for p in enc),
                               "cond_graph": any(f.requires_grad for f in m.conditioning(lr)[0].values()),
                               "initialized": all(a.initialized for a in m.modules() if isinstance(a, layers.ActNorm)),
                               "quant": quant})
            return plain_nll(flow, hr, lr, quant=quant)

        def init(model, *a, **k):
            self.inits.append(plain_init(model, *a, **k))
            return self.inits[-1]

        def actnorm(module, x):
            self.actnorm_inits += 1
            return plain_actnorm(module, x)

        monkeypatch.setattr(losses, "nll", nll)
        monkeypatch.setattr(SRFlowNet, "initialize_actnorms", init)
        monkeypatch.setattr(layers.ActNorm, "_initialize", actnorm)


def test_the_nll_decreases(tmp_path):
    cfg = _cfg(tmp_path, net={"freeze_encoder_until": 0}, total_steps=10, **{"eval.every": 0})
    run = train(cfg, progress=False)
    nll = [r["generator/nll"] for r in run.losses]
    print("nll (bits per HR pixel):", [round(v, 3) for v in nll])
    assert len(nll) == 10 and all(np.isfinite(nll))
    assert nll[-1] < nll[0] - 1.0 and np.mean(nll[-3:]) < np.mean(nll[:3]), nll
    assert {"nll", "z_mean", "z_std", "psnr_y", "ssim_y"} <= set(run.metrics)  # the final validation
    assert all(np.isfinite(v) for v in run.metrics.values())


def test_a_pixel_loss_on_the_temperature_zero_image_trains_with_the_likelihood(tmp_path, monkeypatch):
    seen = []
    plain = losses.flow_mean

    def mean(flow, lr):
        out = plain(flow, lr)
        seen.append(out.requires_grad)
        return out

    monkeypatch.setattr(losses, "flow_mean", mean)
    cfg = _cfg(tmp_path, net={"freeze_encoder_until": 0, "params": {**FLOW, "residual": True}}, total_steps=8,
               **{"eval.every": 0, "losses": {"nll": {"type": "nll"}, "mean": {"type": "l1", "weight": 10.0}},
                  "steps": [{"network": "generator", "losses": ["nll", "mean"], "optimizer": {"lr": 2e-3}}]})
    run = train(cfg, progress=False)
    assert seen == [True] * 8  # one temperature-0 pass per step, in the graph
    l1 = [r["generator/mean"] for r in run.losses]
    assert all(np.isfinite(l1)) and np.mean(l1[-3:]) < np.mean(l1[:3]), l1
    assert all(np.isfinite(r["generator/nll"]) for r in run.losses)


def test_the_encoder_is_frozen_until_the_step_then_trains(tmp_path, monkeypatch):
    rec = Recorder(monkeypatch)
    rrdb = weights.read_state_dict(_rrdb_file(tmp_path))
    cfg = _cfg(tmp_path)  # frozen for steps 0, 1, 2; 6 steps
    train(cfg, stop_after=3, progress=False)
    state = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=True)
    names = [n for n, _ in arch.build("srflow", **{**FLOW, **RRDB}).model.named_parameters()]
    encoder = {i for i, n in enumerate(names) if n.startswith("encoder.")}
    for sd in (state["networks"]["generator"], state["ema"]["generator"]):
        assert all(torch.equal(sd[f"encoder.{k}"], v) for k, v in rrdb.items())  # bit-identical
        assert not torch.equal(sd["flow.layers.3.affine.fAffine.4.weight"],
                               torch.zeros_like(sd["flow.layers.3.affine.fAffine.4.weight"]))  # the flow trained
    # no encoder parameter ever had a gradient: Adam has no state for any of them
    adam = state["optimizers"][0]["state"]
    assert adam and not encoder & set(adam) and set(adam) == set(range(len(names))) - encoder
    train(cfg, resume=True, progress=False)
    assert [c["encoder_grad"] for c in rec.calls] == [False] * 3 + [True] * 3
    assert [c["cond_graph"] for c in rec.calls] == [False] * 3 + [True] * 3  # under no_grad while frozen
    final = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=True)["networks"]["generator"]
    head = set(arch.build("srflow", **{**FLOW, **RRDB}).model.head_parameter_names())
    changed = {k for k, v in rrdb.items() if not torch.equal(final[f"encoder.{k}"], v)}
    assert "conv_first.weight" in changed and "body.0.rdb1.conv1.weight" in changed  # stage 3 trains it
    assert not changed & {h[len("encoder."):] for h in head}  # the SR head no pass uses stays as it was


def test_actnorms_initialise_once_and_resume_is_exact(tmp_path, monkeypatch):
    rec = Recorder(monkeypatch)
    whole = train(_cfg(tmp_path / "a"), progress=False)
    n_actnorms = sum(isinstance(m, layers.ActNorm) for m in arch.build("srflow", **{**FLOW, **RRDB}).model.modules())
    assert rec.inits == [n_actnorms] and rec.actnorm_inits == n_actnorms  # once, every ActNorm
    assert all(c["initialized"] for c in rec.calls)  # before the first loss (and optimizer step)
    assert {c["quant"] for c in rec.calls} == {256}
    cfg_b = _cfg(tmp_path / "b")
    first = train(cfg_b, stop_after=2, progress=False)
    assert rec.inits == [n_actnorms] * 2
    second = train(cfg_b, resume=True, progress=False)  # crosses the unfreeze step (3)
    assert rec.inits == [n_actnorms] * 2 and rec.actnorm_inits == 2 * n_actnorms  # none on resume
    assert second.step == 6 and len(whole.losses) == 6
    for a, b in zip(whole.losses, first.losses + second.losses):
        assert set(a) == set(b)
        for k in a:
            if k != "seconds":
                assert a[k] == b[k], (k, a[k], b[k])
    assert whole.metrics == second.metrics and "nll" in whole.metrics
    print("resume equivalence:", [round(x["generator/nll"], 6) for x in whole.losses], whole.metrics)


def test_the_exported_model_reloads_as_srflow_and_upscales(tmp_path):
    cfg = _cfg(tmp_path, total_steps=2)
    run = train(cfg, progress=False, export_name="flow-tiny", export_dir=tmp_path / "models")
    path = tmp_path / "models" / "flow-tiny.safetensors"
    desc, _ = zoo.resolve(str(path))
    assert desc.arch == "srflow" and desc.scale == 4 and desc.params == {**arch.full_params(
        arch.get_arch("srflow"), {**FLOW, **RRDB})}
    state = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=True)
    ema = state["ema"]["generator"]
    # stored as fp16 (half the size), run in fp32
    assert all(v.dtype == ema[k].dtype and torch.equal(v, ema[k].half().to(v.dtype))
               for k, v in desc.model.state_dict().items())
    card = run.card.read_text()
    assert "architecture: srflow" in card and "encoder from" in card and "rrdb.safetensors" in card
    # the reported PSNR is that of the exported model through the engine (temperature 0: the mean image)
    val = validation_set(load_frames(cfg.data, scale=4)[1], cfg=cfg.data, ev=cfg.eval, scale=4)
    up = Upscaler(desc, device="cpu", precision="auto", tile="auto")
    outs = [up.upscale_array(lq[None])[0] for _, lq, _ in val]
    psnr = float(np.mean([metrics.psnr(o, hq, border=4) for o, (_, _, hq) in zip(outs, val)]))
    assert abs(psnr - run.metrics["psnr_y"]) < 0.01, (psnr, run.metrics)  # within the fp16 rounding
    src = tmp_path / "in.png"
    images.write_image(src, (np.random.RandomState(0).rand(12, 16, 3) * 255).astype(np.uint8))
    assert main(["upscale", str(src), "-o", str(tmp_path / "out.png"), "--model", str(path), "--device", "cpu",
                 "--quiet"]) == 0
    assert images.read_image(tmp_path / "out.png").shape == (48, 64, 3)


@pytest.mark.parametrize("changes, expected", [
    ({"net": {"arch": "rrdb", "params": RRDB, "init_encoder": None, "freeze_encoder_until": 0}},
     "losses.nll: the nll loss needs a flow generator (srflow); a rrdb has no likelihood"),
    ({"losses": {"nll": {"type": "nll"}, "pixel": {"type": "translational"}}},
     "losses.pixel: a srflow generator trains with the nll loss and l1/l2 on its temperature-0 image"),
    ({"net": {"arch": "rrdb", "params": RRDB, "init_encoder": None}},
     "networks.generator.freeze_encoder_until: a rrdb network has no conditional encoder (srflow has)"),
    ({"net": {"arch": "compact", "params": {"nf": 8, "num_conv": 1}, "freeze_encoder_until": 0}},
     "networks.generator.init_encoder: a compact network has no conditional encoder"),
    ({"net": {"params": {**FLOW, "nf": 16}}}, "networks.generator.params: {'nf': 16} differ from the encoder's"),
    ({"net": {"init_encoder": "no-such-model"}}, "networks.generator.init_encoder: unknown model 'no-such-model'"),
    ({"net": {"weights": "esrgan"}}, "networks.generator.init_encoder: the encoder comes from 'weights' already"),
    ({"net": {"freeze_encoder_until": -1}}, "networks.generator.freeze_encoder_until: expected a step"),
    ({"losses.nll.quant": -2}, "losses.nll.quant: expected 0 (no dequantisation)"),
    ({"losses": {"nll": {"type": "l1", "quant": 256}}}, "losses.nll: key 'quant' does not apply to a loss of type l1"),
])
def test_recipe_mistakes_are_one_line(tmp_path, changes, expected):
    with pytest.raises(VsrError) as e:
        train(_cfg(tmp_path, **changes), progress=False)
    msg = str(e.value)
    assert expected in msg and "\n" not in msg, msg
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_init_encoder_takes_an_rrdb_only(tmp_path):
    weights.save(arch.build("compact", nf=8, num_conv=1, upscale=4), tmp_path / "compact.safetensors")
    with pytest.raises(VsrError, match=r"compact.safetensors is a compact network; expected an RGB rrdb"):
        train(_cfg(tmp_path, net={"init_encoder": str(tmp_path / "compact.safetensors")}), progress=False)


def test_a_frozen_encoder_is_stored_once_in_the_named_model_it_came_from(tmp_path, monkeypatch):
    models = tmp_path / "installed"
    models.mkdir()
    monkeypatch.setenv("VSR_MODELS", str(models))
    base = _rrdb_file(models)
    (models / "tiny-esrgan.yml").write_text("name: tiny-esrgan\narchitecture: rrdb\nscale: 4\nlicense: BSD-3-Clause\n"
                                            "source: test\nweights: rrdb.safetensors\n")
    train(_cfg(tmp_path, total_steps=2, net={"init_encoder": "tiny-esrgan", "freeze_encoder_until": 5}),
          progress=False, export_name="flow", export_dir=tmp_path / "models")
    path = tmp_path / "models" / "flow.safetensors"
    assert not any(k.startswith("encoder.") for k in weights.read_state_dict(path))
    desc = zoo.load_path(path)
    state = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=True)["ema"]["generator"]
    # the encoder as the base model's file holds it, the flow as trained (stored as fp16)
    assert all(torch.equal(v, state[k] if k.startswith("encoder.") else state[k].half().to(v.dtype))
               for k, v in desc.model.state_dict().items())
    # another version of the base model is refused, not silently combined
    sd = weights.read_state_dict(base)
    sd["conv_first.bias"] = sd["conv_first.bias"] + 1
    weights.save(sd, base)
    with pytest.raises(VsrError, match="another version of model 'tiny-esrgan'"):
        zoo.load_path(path)
    # an encoder that trained is stored whole
    train(_cfg(tmp_path, total_steps=2, output=str(tmp_path / "run2"),
               net={"init_encoder": "tiny-esrgan", "freeze_encoder_until": 1}),
          progress=False, export_name="flow2", export_dir=tmp_path / "models")
    assert any(k.startswith("encoder.") for k in weights.read_state_dict(tmp_path / "models" / "flow2.safetensors"))
