"""SRFlow: the authors' checkpoint layouts load strictly, the flow is exactly invertible with correct
log-determinants, temperature 0 zeroes every latent, the likelihood trains, and the engine and the CLI
run it through the sampled contract."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vsr import arch, images, weights
from vsr.arch.srflow import layers
from vsr.cli import main
from vsr.engine import Upscaler
from vsr.errors import VsrError

from conftest import TINY

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
TINY_X4, TINY_X8 = TINY["srflow"]


pytestmark = pytest.mark.usefixtures("one_thread")


def gentle(seed: int = 0, **params) -> arch.ModelDescriptor:
    """A tiny SRFlow with small random weights everywhere (zero convs included), so that every part of
    the flow and its conditioning matters, yet decoding stays in a sensible range."""
    torch.manual_seed(seed)
    desc = arch.build("srflow", **params)
    with torch.no_grad():
        for p in desc.model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return desc


def zeros(model, x: torch.Tensor) -> list[torch.Tensor]:
    return [torch.zeros(x.shape[0], *s) for s in model.latent_shapes(*x.shape[-2:])]


# -- the authors' checkpoints -----------------------------------------------------------------------

def reference_state_dict(name: str) -> tuple[dict[str, torch.Tensor], int]:
    """Random tensors of the shapes a released checkpoint lists (trunk block 0 expanded to all blocks):
    rotations for the 1x1 convs, small values elsewhere and the couplings' scales near 1 (not sigmoid(2),
    which decoding divides by at every coupling), so that decoding stays finite and well conditioned."""
    path = REFERENCE / f"{name}-checkpoint-keys.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found (../shared/reference)")
    lines = path.read_text().splitlines()
    nkeys, nparams = map(int, re.search(r"nkeys (\d+) nparams (\d+)", lines[0]).groups())
    nblocks = int(re.search(r"all (\d+) blocks", lines[2])[1])
    g = torch.Generator().manual_seed(0)
    sd = {}
    for line in lines:
        m = re.fullmatch(r"(\S+) \(([\d, ]*)\)", line)
        if not m:
            continue
        shape = tuple(int(s) for s in m[2].split(",") if s.strip())
        keys = [m[1].replace("RRDB_trunk.0.", f"RRDB_trunk.{b}.") for b in range(nblocks)] \
            if "RRDB_trunk.0." in m[1] else [m[1]]
        for k in keys:
            if k.endswith("invconv.weight"):
                sd[k] = torch.linalg.qr(torch.randn(shape, generator=g))[0]
            else:  # the zero convs (couplings' last layers, split priors) start near zero in training too
                small = k.startswith("flowUpsamplerNet.layers.") and re.search(r"(\.4|conv)\.weight$", k)
                sd[k] = torch.randn(shape, generator=g) * (1e-3 if small else 0.02)
                if k.endswith(".4.bias"):  # a coupling's (shift, scale) pairs: scale = sigmoid(. + 2) -> ~0.99
                    sd[k][1::2] += 3.0
    assert len(sd) == nkeys
    assert sum(v.numel() for v in sd.values()) == nparams
    return sd, nparams


@pytest.mark.parametrize("name,params,shapes", [
    ("srflow-df2k-x4", dict(scale=4, nf=64, nb=23, gc=32, K=16, L=3, hidden=64, cond_blocks=4, residual=False,
                            authors_rrdb=True),
     [(96, 8, 8), (6, 32, 32)]),
    ("srflow-celeba-x8", dict(scale=8, nf=64, nb=8, gc=32, K=16, L=4, hidden=64, cond_blocks=4, residual=False,
                            authors_rrdb=True),
     [(192, 8, 8), (12, 32, 32), (6, 64, 64)]),
])
def test_the_released_checkpoint_layouts_load_strictly_and_decode(name, params, shapes):
    sd, nparams = reference_state_dict(name)
    unused = {k: v for k, v in sd.items() if k.startswith("flowUpsamplerNet.f.")}
    assert unused  # the conv no forward pass uses: dropped on loading
    desc = weights.detect(weights.unwrap({"params": {f"module.{k}": v for k, v in sd.items()}}))
    assert desc.arch == "srflow" and desc.params == params and desc.scale == params["scale"]
    assert desc.contract == "sampled" and desc.tiling == "latent" and desc.size_multiple == 2
    assert desc.num_params == nparams - sum(v.numel() for v in unused.values())
    # every tensor arrived where it belongs (spot checks across the layout)
    model_sd = desc.model.state_dict()
    assert torch.equal(model_sd["encoder.body.22.rdb3.conv5.weight" if params["nb"] == 23 else
                                "encoder.body.7.rdb3.conv5.weight"],
                       sd[f"RRDB.RRDB_trunk.{params['nb'] - 1}.RDB3.conv5.weight"])
    assert torch.equal(model_sd["flow.layers.19.conv.logs"], sd["flowUpsamplerNet.layers.19.conv.logs"])
    assert torch.equal(model_sd["flow.layers.57.affine.fAffine.0.actnorm.logs"],
                       sd["flowUpsamplerNet.layers.57.affine.fAffine.0.actnorm.logs"])
    if params["scale"] == 8:
        assert torch.equal(model_sd["encoder.conv_up3.weight"], sd["RRDB.upconv3.weight"])
    lr = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert desc.model.latent_shapes(16, 16) == shapes
    with torch.no_grad():
        out = desc.model.reverse(lr, zeros(desc.model, lr))
    assert out.shape == (1, 3, 16 * params["scale"], 16 * params["scale"]) and torch.isfinite(out).all()


@pytest.mark.parametrize("damage,message", [
    ("missing", r"lacks flow\.layers\.5\.actnorm\.bias"),
    ("shape", r"tensor flow\.layers\.5\.actnorm\.bias has shape \(3, 3\), expected \(1, 12, 1, 1\)"),
])
def test_a_released_checkpoint_with_a_bad_key_is_one_line_naming_it(tmp_path, capsys, damage, message):
    sd, _ = reference_state_dict("srflow-df2k-x4")
    key = "flowUpsamplerNet.layers.5.actnorm.bias"  # the same layer index in both layouts
    if damage == "missing":
        del sd[key]
    else:
        sd[key] = torch.zeros(3, 3)
    path = tmp_path / "SRFlow_DF2K_4X.pth"
    torch.save(sd, path)
    src = tmp_path / "in.png"
    images.write_image(src, np.zeros((8, 8, 3), np.uint8))
    assert main(["upscale", str(src), "-o", str(tmp_path / "out.png"), "--model", str(path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err
    assert not (tmp_path / "out.png").exists()


def test_a_foreign_or_damaged_flow_is_not_taken_for_srflow():
    sd = weights.unwrap(arch.build("srflow", **TINY_X4).model.state_dict())
    assert arch.get_arch("srflow").detect({"encoder.conv_first.weight": torch.zeros(1)}) is None
    broken = {k: v for k, v in sd.items() if not k.startswith("flow.layers.3.")}  # a flow step gone
    with pytest.raises(Exception, match="pattern"):
        weights.detect(broken)


def test_the_conditioning_encoder_is_an_rrdbnet():
    """An RRDBNet trained with L1 (training's first stage) moves into SRFlow's encoder as it is."""
    desc = gentle(**TINY_X4)
    esrgan = arch.build("rrdb", nf=8, nb=3, gc=4, scale=4).model.eval()
    esrgan.load_state_dict({k[len("encoder."):]: v for k, v in desc.model.state_dict().items()
                            if k.startswith("encoder.")})
    lr = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(desc.model.encoder.sr(lr), esrgan(lr), atol=1e-6)
    assert set(desc.model.head_parameter_names()) == {
        f"encoder.{n}.{p}" for n in ("conv_up2", "conv_hr", "conv_last") for p in ("weight", "bias")}


# -- the flow itself ----------------------------------------------------------------------------------

def _jacobian_logdet(fn, x: torch.Tensor) -> float:
    jac = torch.autograd.functional.jacobian(lambda t: fn(t.view_as(x)).reshape(-1), x.reshape(-1))
    return float(torch.linalg.slogdet(jac.double())[1])


def test_each_layer_reports_its_true_log_determinant():
    torch.manual_seed(0)
    ft = torch.randn(1, 5, 2, 2)
    x = torch.randn(1, 4, 2, 2)
    step = layers.FlowStep(4, 5, 6, coupling=True)
    with torch.no_grad():
        for p in step.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    step.eval().requires_grad_(False)
    for layer in (step.actnorm, step.invconv, step.affine, step):
        y, logdet = layer.encode(x, ft)
        assert abs(logdet.item() - _jacobian_logdet(lambda t: layer.encode(t, ft)[0], x)) < 1e-3
        assert torch.allclose(layer.decode(y, ft), x, atol=1e-5)
    sq = layers.Squeeze()
    assert torch.equal(sq.encode(x)[0], F.pixel_unshuffle(x, 2)) and torch.equal(sq.decode(sq.encode(x)[0]), x)


@pytest.mark.parametrize("params", [TINY_X4, TINY_X8], ids=["x4", "x8"])
def test_encoding_and_decoding_are_exact_inverses(params):
    desc = gentle(**params)
    m = desc.model.eval()
    s = params.get("scale", 4)
    lr = torch.rand(2, 3, 8, 12)
    hr = torch.rand(2, 3, 8 * s, 12 * s)
    with torch.no_grad():
        latents, nll = m(hr, lr)
        assert [tuple(z.shape[1:]) for z in latents] == m.latent_shapes(8, 12)
        assert torch.isfinite(nll).all() and nll.shape == (2,)
        assert (m.reverse(lr, latents) - hr).abs().max() < 1e-4
        # and the other way round: random latents decode to an image that encodes back to them
        zs = [torch.randn(2, *shape) * 0.5 for shape in m.latent_shapes(8, 12)]
        again = m.encode(m.reverse(lr, zs), lr)
        assert all((a - b).abs().max() < 1e-3 for a, b in zip(again, zs))


def test_a_residual_flow_is_the_same_flow_around_the_encoders_own_image():
    plain = gentle(**TINY_X4).model.eval()
    res = arch.build("srflow", **TINY_X4, residual=True).model.eval()
    res.load_state_dict(plain.state_dict())
    lr = torch.rand(2, 3, 8, 12)
    hr = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        sr = plain.encoder.sr(lr)
        assert res.conditioning(lr)[1].equal(sr)  # the SR image comes from the conditioning's own trunk pass
        (z_res, *_), nll_res = res(hr, lr)
        (z_plain, *_), nll_plain = plain(hr - sr, lr)
        assert torch.allclose(z_res, z_plain, atol=1e-5) and torch.allclose(nll_res, nll_plain, atol=1e-5)
        zs = [torch.randn(2, *shape) * 0.5 for shape in res.latent_shapes(8, 12)]
        assert torch.allclose(res.reverse(lr, zs), plain.reverse(lr, zs) + sr, atol=1e-5)
        assert (res.reverse(lr, res.encode(hr, lr)) - hr).abs().max() < 1e-4
    assert res.head_parameter_names() == [] and plain.head_parameter_names()  # the SR head is used


def test_temperature_zero_is_the_prior_mean_at_every_split():
    desc = gentle(**TINY_X8)  # two splits
    m = desc.model.eval()
    lr = torch.rand(1, 3, 4, 6)
    with torch.no_grad():
        # each split decodes eps = 0 to exactly its learned prior mean (not to a draw from the prior)
        splits = [layer for layer in m.flow.layers if isinstance(layer, layers.Split)]
        assert len(splits) == 2
        for split in splits:
            z1 = torch.randn(1, split.keep, 6, 6)
            mean = split._prior(z1)[0]
            assert mean.abs().max() > 0  # a learned, non-trivial mean
            assert torch.equal(split.decode(z1, torch.zeros(1, split.leave, 6, 6)), torch.cat([z1, mean], 1))
        # the whole model: zero latents give one deterministic image, whatever the global RNG does
        zs = zeros(m, lr)
        torch.manual_seed(1)
        mean_image = m.reverse(lr, zs)
        torch.manual_seed(2)
        assert torch.equal(m.reverse(lr, zs), mean_image)
        # encoding the mean image gives back all-zero latents: every split's eps was honoured as 0
        assert all(z.abs().max() < 1e-4 for z in m.encode(mean_image, lr))
        # and every latent matters: a change in any one of them changes the image
        for i in range(len(zs)):
            moved = [z + (0.5 if j == i else 0.0) for j, z in enumerate(zs)]
            assert (m.reverse(lr, moved) - mean_image).abs().max() > 1e-3
    # through the engine: temperature 0 (the default) draws all-zero latents
    engine = Upscaler(desc, device="cpu", tile=0)
    assert all(torch.equal(z, torch.zeros_like(z)) for z in engine._latents((4, 6), [(0, 0)]))
    out = engine(lr)
    assert (out - mean_image).abs().max() < 1e-5  # channels_last there: the same sums in another order
    assert torch.equal(Upscaler(desc, device="cpu", tile=0, temperature=0.0, seed=7)(lr), out)  # no draw at all


def test_the_likelihood_is_in_bits_per_pixel_and_trains():
    desc = gentle(**TINY_X4)
    m = desc.model
    # a fresh flow without couplings is a rotation of the HR image (ActNorms at the identity, random
    # rotations for the 1x1 convs, split priors N(0, 1)): its NLL is the standard normal's, in bits per
    # HR pixel over three channels
    fresh = arch.build("srflow", **{**TINY_X4, "K": 0}).model.eval()
    hr = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    lr = F.avg_pool2d(hr, 4)
    with torch.no_grad():
        nll = fresh(hr, lr)[1]
    expected = -torch.distributions.Normal(0.0, 1.0).log_prob(hr).sum() / (np.log(2) * 16 * 16)
    assert torch.allclose(nll, expected.reshape(1), rtol=1e-4)
    with torch.no_grad():
        noisy = fresh(hr, lr, quant=256)[1]  # dequantised: the quantisation bins' width counts too
    assert abs(float(noisy - nll) - 8.0) < 0.05
    # a few Adam steps on one image lower its NLL (the first training pass initialises the ActNorms)
    m.train()
    m.requires_grad_(True)
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = m(hr, lr, quant=256)[1].mean()
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses
    norms = [mod for mod in m.modules() if isinstance(mod, layers.ActNorm)]
    assert norms and all(n.initialized for n in norms)
    # loaded weights are never re-initialised from the data by a training pass
    loaded = weights.detect(m.state_dict()).model
    assert all(n.initialized for n in loaded.modules() if isinstance(n, layers.ActNorm))
    assert not any(n.initialized for n in arch.build("srflow", **TINY_X4).model.modules()
                   if isinstance(n, layers.ActNorm))


# -- through the engine and the CLI -------------------------------------------------------------------

def test_engine_output_does_not_depend_on_batch_or_tiles():
    desc = gentle(**TINY_X4)
    frames = torch.rand(2, 3, 80, 120, generator=torch.Generator().manual_seed(3))

    def run(engine, batch):
        s = engine.session()
        return torch.cat([s(frames[i:i + batch], indices=list(range(i, i + batch)), resets=[i == 0] * batch)
                          for i in range(0, len(frames), batch)])

    whole = run(Upscaler(desc, device="cpu", tile=0, temperature=0.8, seed=1), 1)
    assert whole.shape == (2, 3, 320, 480) and torch.isfinite(whole).all()
    assert 0.05 < float(whole.std()) < 5
    # each frame's latents are the same draws whatever the batch (one thread: the same arithmetic too)
    assert torch.equal(run(Upscaler(desc, device="cpu", tile=0, temperature=0.8, seed=1), 2), whole)
    tiled = Upscaler(desc, device="cpu", tile=64, overlap=32, temperature=0.8, seed=1)
    assert tiled.tiles(80, 120) == 6
    assert (run(tiled, 2) - whole).abs().max() < 1e-5
    other = run(Upscaler(desc, device="cpu", tile=0, temperature=0.8, seed=2), 1)
    assert (other - whole).abs().max() > 1e-2  # another seed, another sample


def test_cli_upscales_with_a_saved_srflow_file(tmp_path):
    model = tmp_path / "srflow-tiny.safetensors"
    weights.save(gentle(**TINY_X4), model)
    src = tmp_path / "in.png"
    images.write_image(src, (np.random.RandomState(0).rand(12, 16, 3) * 255).astype(np.uint8))

    def upscale(out, *extra):
        assert main(["upscale", str(src), "-o", str(out), "--model", str(model), "--device", "cpu", "--quiet",
                     *extra]) == 0
        return images.read_image(out)

    a = upscale(tmp_path / "a.png", "--tau", "0.5", "--seed", "3")
    assert a.shape == (48, 64, 3)
    assert np.array_equal(upscale(tmp_path / "b.png", "--tau", "0.5", "--seed", "3"), a)
    assert not np.array_equal(upscale(tmp_path / "c.png", "--tau", "0.5", "--seed", "4"), a)
    mean = upscale(tmp_path / "m.png")  # temperature 0 by default
    assert not np.array_equal(mean, a)


def test_a_video_with_audio_and_subtitles_goes_through_a_residual_srflow(tmp_path, capsys):
    import json
    import sys

    import av

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import media

    model = tmp_path / "srflow-res.safetensors"
    desc = gentle(**TINY_X4, residual=True)
    weights.save(desc, model, dtype=torch.float16, metadata={"vsr.params": json.dumps(desc.params)})
    src = media.make_rich_clip(tmp_path / "clip.mkv", frames=6)
    out = tmp_path / "out.mkv"
    assert main(["upscale", str(src), "-o", str(out), "--model", str(model), "--device", "cpu",
                 "--encoder-preset", "ultrafast", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outputs"] == [str(out)] and report["nonfinite_fallback"] == 0
    with av.open(str(src)) as a, av.open(str(out)) as b:
        assert [s.type for s in a.streams] == [s.type for s in b.streams]  # audio, subtitles, attachment
        assert len(list(b.decode(video=0))) == report["frames"] == len(list(a.decode(video=0)))


# -- the other uses: restoration and transfer ----------------------------------------------------------

def test_restore_normalises_latents_and_transfer_of_an_image_to_itself_reconstructs_it(tmp_path):
    from vsr import flowtools

    desc = gentle(**TINY_X4)
    rng = np.random.RandomState(0)
    smooth = lambda a: np.kron(a, np.ones((8, 8, 1))).astype(np.uint8)  # noqa: E731 - a photo-like blockiness
    a = smooth(rng.rand(10, 12, 3) * 255)[:75, :90]
    b = smooth(rng.rand(10, 12, 3) * 255)[:75, :90]
    z = [torch.randn(1, 6, 5, 7) * 3 + 2]
    n = flowtools.normalise(z)[0]
    assert n.mean(dim=(2, 3)).abs().max() < 1e-5 and (n.std(dim=(2, 3)) - 1).abs().max() < 1e-5
    # encoding then decoding with the same downscale is the identity (to a grey level), so transfer
    # of an image onto itself gives it back, centre-cropped to the flow's block of 8 (75x90 -> 72x88)
    same = flowtools.transfer(desc, a, a, device="cpu")
    assert same.shape == (72, 88, 3) and np.abs(same.astype(int) - a[1:73, 1:89]).max() <= 1
    other = flowtools.transfer(desc, a, b, device="cpu")
    assert other.shape == (72, 88, 3) and np.abs(other.astype(int) - same).mean() > 1
    restored, strength = flowtools.restore(desc, a, device="cpu")
    assert strength in flowtools.RESTORE_STRENGTHS and restored.shape == (72, 88, 3) and np.abs(restored.astype(int) - same).mean() > 0.5

    model = tmp_path / "srflow-tiny.safetensors"
    weights.save(desc, model)
    src, out = tmp_path / "a.png", tmp_path / "restored.png"
    images.write_image(src, a)
    assert main(["srflow", "restore", str(src), "-o", str(out), "--model", str(model), "--device", "cpu"]) == 0
    assert np.array_equal(images.read_image(out), restored)
    assert main(["srflow", "transfer", str(src), str(src), "-o", str(out), "--model", str(model)]) == 0
    assert np.array_equal(images.read_image(out), same)


def test_restore_moves_latents_part_way_where_full_normalisation_blows_up(monkeypatch, tmp_path, capsys):
    from vsr import flowtools

    desc = gentle(**TINY_X4)
    a = np.kron(np.random.RandomState(1).rand(6, 6, 3) * 255, np.ones((8, 8, 1))).astype(np.uint8)
    reverse, tried = desc.model.reverse, []

    def fragile(lr, latents):  # non-finite unless the latents stay within a quarter of the way
        tried.append(len(tried))
        out = F.interpolate(lr, scale_factor=4)
        return out if len(tried) >= 3 else out * float("nan")

    monkeypatch.setattr(desc.model, "reverse", fragile)
    restored, strength = flowtools.restore(desc, a, device="cpu")
    assert strength == 0.25 and len(tried) == 3 and restored.shape == (48, 48, 3)
    monkeypatch.setattr(desc.model, "reverse", lambda lr, latents: reverse(lr, latents) * 1e6)
    with pytest.raises(VsrError, match="cannot restore"):
        flowtools.restore(desc, a, device="cpu")
    monkeypatch.setattr(flowtools, "load_flow", lambda name: desc)
    tried.clear()
    monkeypatch.setattr(desc.model, "reverse", fragile)
    src = tmp_path / "a.png"
    images.write_image(src, a)
    assert main(["srflow", "restore", str(src), "-o", str(tmp_path / "o.png"), "--model", "x", "--device", "cpu"]) == 0
    assert "0.25 of the way" in capsys.readouterr().err


def test_srflow_commands_refuse_other_models_and_tiny_images(tmp_path, capsys):
    rrdb = tmp_path / "rrdb.safetensors"
    weights.save(arch.build("rrdb", **TINY["rrdb"][0]), rrdb)
    src = tmp_path / "a.png"
    images.write_image(src, np.zeros((40, 40, 3), np.uint8))
    assert main(["srflow", "restore", str(src), "-o", str(tmp_path / "o.png"), "--model", str(rrdb)]) == 1
    assert "not a flow" in capsys.readouterr().err
    flow = tmp_path / "flow.safetensors"
    weights.save(gentle(**TINY_X4), flow)
    images.write_image(src, np.zeros((6, 6, 3), np.uint8))
    assert main(["srflow", "restore", str(src), "-o", str(tmp_path / "o.png"), "--model", str(flow)]) == 1
    assert "too small" in capsys.readouterr().err
    assert main(["srflow", "restore", str(src), "-o", str(src), "--model", str(flow)]) == 1
    assert "overwrite an input" in capsys.readouterr().err


def test_non_finite_reverse_passes_fall_back_to_the_mean_then_to_the_rrdb(monkeypatch):
    desc = gentle(**TINY_X4)
    model = desc.model
    x = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    true_reverse = type(model).reverse

    def spotty(lr, latents):  # black spots wherever a latent is not zero, as far from training data
        out = true_reverse(model, lr, latents)
        return out / (1 - any(bool(z.abs().max() > 0) for z in latents))

    def blown_up(lr, latents):  # finite but huge: a reverse pass that divided by tiny coupling scales
        out = true_reverse(model, lr, latents)
        return out * (1 + 1e6 * any(bool(z.abs().max() > 0) for z in latents))

    for broken in (spotty, blown_up):
        monkeypatch.setattr(model, "reverse", broken)
        eng = Upscaler(desc, device="cpu", tile=0, temperature=0.8, seed=1)
        out = eng(x)
        assert torch.equal(out, Upscaler(desc, device="cpu", tile=0)(x))  # the mean image instead
        assert (eng.stats.nonfinite_recomputed, eng.stats.nonfinite_fallback) == (1, 0)

    monkeypatch.setattr(model, "reverse", lambda lr, latents: F.interpolate(lr, scale_factor=4) * float("nan"))
    eng = Upscaler(desc, device="cpu", tile=0)
    out = eng(x)
    with torch.no_grad():
        assert torch.allclose(out, model.encoder.sr(x)) and torch.isfinite(out).all()
    assert eng.stats.nonfinite_fallback == 1


def test_in_bf16_only_the_encoder_runs_in_half_precision():
    desc = gentle(**dict(TINY_X4, residual=True))
    x = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    seen: dict[str, set] = {"encoder": set(), "flow": set()}
    for part in ("encoder", "flow"):
        for m in getattr(desc.model, part).modules():
            if isinstance(m, torch.nn.Conv2d):
                m.register_forward_hook(lambda mod, inp, out, part=part: seen[part].add(out.dtype))
    half = Upscaler(desc, device="cpu", precision="bf16", tile=0, temperature=0.5, seed=3)
    out = half(x)
    assert seen == {"encoder": {torch.bfloat16}, "flow": {torch.float32}}
    assert all(p.dtype == torch.float32 for p in desc.model.parameters())  # weights stay fp32 (and shared)
    full = Upscaler(desc, device="cpu", precision="fp32", tile=0, temperature=0.5, seed=3)(x)
    assert half.identity()["dtype"] == "torch.bfloat16"
    assert 0 < (out - full).abs().max() < 0.05


def test_the_shipped_srflow_model_takes_its_encoder_from_esrgan_vhs_and_is_deterministic(tmp_path):
    from vsr import zoo

    desc, _ = zoo.resolve("srflow")
    assert desc.arch == "srflow" and desc.params["residual"] and desc.contract == "sampled"
    rrdb, _ = zoo.resolve("esrgan-vhs")
    enc = desc.model.encoder.state_dict()
    assert all(torch.equal(enc[k], v) for k, v in rrdb.model.state_dict().items())  # stored once, in esrgan-vhs's file
    photo = REFERENCE.parent / "data" / "photos" / "plasma-Path.jpg"
    if not photo.is_file():
        pytest.skip(f"{photo} not found")
    src = tmp_path / "crop.png"
    images.write_image(src, images.read_image(photo)[200:224, 300:332])
    outs = []
    for i, extra in enumerate([[], [], ["--tau", "0.8", "--seed", "1"]]):
        out = tmp_path / f"out{i}.png"
        assert main(["upscale", str(src), "-o", str(out), "--model", "srflow", "--device", "cpu", "--quiet",
                     *extra]) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and outs[2] != outs[0]  # temperature 0: the same bytes every time
