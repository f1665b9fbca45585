"""Switched convolutions: conversion is exact, the efficient path equals the naive oracle (outputs and
gradients), the differentiable argmax and SwitchNorm do what they say, and the switched network loads,
saves (its SwitchNorm buffers included) and upscales like any other."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from vsr import arch, weights, zoo
from vsr.arch import switched
from vsr.arch.compact import CompactNet
from vsr.arch.switched import SwitchedConv2d, SwitchNorm, convert, from_compact, hard_route
from vsr.engine import Upscaler

pytestmark = pytest.mark.usefixtures("one_thread")


def _spread(layer: SwitchedConv2d, seed: int = 0) -> SwitchedConv2d:
    """Kernels moved apart, so that every routing decision shows in the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.add_(torch.randn(layer.weight.shape, generator=g) * 0.2)
        layer.bias.add_(torch.randn(layer.bias.shape, generator=g) * 0.2)
        layer.selector.weight.mul_(4)  # decisive routing: every kernel gets pixels
    return layer


@pytest.mark.parametrize("k,stride,padding", [(3, 1, 1), (1, 1, 0), (5, 2, 2), (3, 2, 0)])
def test_a_converted_layer_equals_the_convolution(k, stride, padding):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, k, stride, padding)
    x = torch.randn(2, 6, 13, 11)
    layer = SwitchedConv2d.from_conv(conv, breadth=8)
    assert (layer(x) - conv(x)).abs().max() < 1e-6
    net = convert(nn.Sequential(conv, nn.ReLU(), nn.Sequential(nn.Conv2d(5, 4, 3, 1, 1))), 4)
    assert isinstance(net[0], SwitchedConv2d) and isinstance(net[2][0], SwitchedConv2d)


@pytest.mark.parametrize("k,stride,padding", [(3, 1, 1), (1, 1, 0), (3, 2, 1)])
def test_the_efficient_path_equals_the_naive_one_outputs_and_gradients(k, stride, padding):
    torch.manual_seed(1)
    layer = _spread(SwitchedConv2d(6, 7, k, stride, padding, breadth=8))
    x = torch.randn(3, 6, 17, 15, requires_grad=True)
    results = []
    for naive in (False, True):
        layer.naive = naive
        layer.zero_grad()
        x.grad = None
        out = layer(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), x.grad.clone(), {n: p.grad.clone() for n, p in layer.named_parameters()}))
    (fast, gx_fast, g_fast), (slow, gx_slow, g_slow) = results
    route, _ = layer.routing(x)
    assert len(route.unique()) >= 6  # the test covers most kernels
    assert (fast - slow).abs().max() < 1e-4
    assert (gx_fast - gx_slow).abs().max() < 1e-4
    for name in g_slow:
        assert (g_fast[name] - g_slow[name]).abs().max() < 1e-4, name
    assert g_fast["selector.weight"].abs().sum() > 0  # the selector learns through the gate


def test_differentiable_argmax_routes_the_gradient_to_the_chosen_kernel():
    probs = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]).view(2, 3, 1, 1).requires_grad_(True)
    route, gate = hard_route(probs)
    assert route.view(2).tolist() == [1, 0] and torch.equal(gate, torch.ones(2, 1, 1, 1))
    gate.backward(torch.full_like(gate, 3.0))
    assert torch.allclose(probs.grad.view(2, 3), torch.tensor([[0, 3 / 0.5, 0], [3 / 0.6, 0, 0]]))


def test_switchnorm_fills_its_buffer_in_training_only_and_then_evens_usage_out():
    norm = SwitchNorm(2, q=4)
    skewed = torch.tensor([0.75, 0.25]).view(1, 2, 1, 1).expand(2, 2, 3, 3).contiguous()
    norm.eval()
    assert torch.equal(norm(skewed), skewed) and int(norm.count) == 0
    norm.train()
    for _ in range(3):
        assert torch.equal(norm(skewed), skewed)  # not full yet: untouched
    out = norm(skewed)  # the fourth fills it: divided by the usage, both kernels equal now
    assert int(norm.count) == 4 and torch.allclose(out[:, 0], out[:, 1])
    assert set(norm.state_dict()) == {"history", "count"}


def test_expert_dropout_only_in_training():
    torch.manual_seed(2)
    layer = _spread(SwitchedConv2d(4, 4, 3, 1, 1, breadth=4, dropout=0.5))
    x = torch.randn(1, 4, 24, 24)
    layer.eval()
    used = set(layer.routing(x)[0].unique().tolist())
    assert len(used) >= 3
    layer.train()
    draws = [set(layer.routing(x)[0].unique().tolist()) for _ in range(8)]
    assert any(len(d) < len(used) for d in draws)
    with pytest.raises(ValueError, match="dropout"):
        SwitchedConv2d(4, 4, 3, breadth=4, dropout=1.0)


def test_the_switched_network_converts_saves_loads_and_upscales(tmp_path):
    torch.manual_seed(3)
    plain = CompactNet(nf=8, num_conv=2, upscale=4).eval()
    net = from_compact(plain, breadth=4).eval()
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        assert (net(x) - plain(x)).abs().max() < 1e-6
    net.train()
    for _ in range(3):  # SwitchNorm history moves in training
        net(x)
    net.eval()
    for m in net.modules():
        if isinstance(m, SwitchedConv2d):
            _spread(m)
    path = tmp_path / "switched.safetensors"
    desc = arch.get_arch("switched").describe(switched.params_from_state_dict(net.state_dict()), net)
    weights.save(desc, path)
    loaded = zoo.load_path(path)
    assert loaded.arch == "switched" and loaded.params["breadth"] == 4 and loaded.scale == 4
    assert torch.equal(loaded.model.body[2].norm.history, net.body[2].norm.history)
    with torch.no_grad():
        ref = net(x)
        assert torch.equal(loaded.model(x), ref)
    out = Upscaler(loaded, device="cpu", tile=0)(x)
    assert (out - ref).abs().max() < 1e-5
    assert zoo.load_path(tmp_path / "switched.safetensors").arch != "compact"


def test_the_trainer_converts_a_trained_compact_network_and_trains_it_switched(tmp_path):
    from test_train_config import recipe, write_frames
    from vsr.train.config import load_recipe
    from vsr.train.loop import train

    write_frames(tmp_path / "frames")
    torch.manual_seed(4)
    start = tmp_path / "compact.safetensors"
    weights.save(arch.build("compact", nf=8, num_conv=2, upscale=4), start)
    cfg = load_recipe(recipe(tmp_path, **{
        "networks.generator": {"arch": "switched", "weights": str(start), "params": {"breadth": 4}, "ema": 0.5},
        "steps": [{"network": "generator", "losses": ["pixel"], "optimizer": {"lr": 1e-3}}],
        "total_steps": 3}))
    run = train(cfg, progress=False, export_name="sw", export_dir=tmp_path / "models")
    desc = zoo.load_path(tmp_path / "models" / "sw.safetensors")
    assert desc.arch == "switched" and desc.params["breadth"] == 4 and run.card.is_file()
    layer = desc.model.body[2]
    assert int(layer.norm.count) == 3  # SwitchNorm saw the training batches, and its state was exported
    kernels = layer.weight.view(4, -1)
    assert (kernels - kernels[:1]).abs().max() > 0  # the copies have moved apart
    with pytest.raises(Exception, match="takes only 'breadth'"):
        train(load_recipe(recipe(tmp_path, **{
            "networks.generator": {"arch": "switched", "weights": str(start), "params": {"nf": 8}},
            "output": str(tmp_path / "run2")})), progress=False)


def test_inspect_selectors_draws_each_layers_choice(tmp_path, capsys):
    from vsr import images
    from vsr.cli import main

    torch.manual_seed(5)
    desc = arch.build("switched", nf=8, num_conv=2, upscale=4, breadth=4)
    for m in desc.model.modules():
        if isinstance(m, SwitchedConv2d):
            _spread(m)
    model = tmp_path / "sw.safetensors"
    weights.save(desc, model)
    src, out = tmp_path / "in.png", tmp_path / "maps.png"
    img = (torch.rand(20, 30, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy()
    images.write_image(src, img)
    assert main(["inspect", "selectors", str(src), "-o", str(out), "--model", str(model)]) == 0
    sheet = images.read_image(out)
    assert sheet.shape == (20, 3 * 30 + 2 * 4, 3)  # the input and two switched layers' maps
    assert (sheet[:, :30] == img).all()
    with torch.no_grad():
        first = desc.model.body[:2](torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)
        route = desc.model.body[2].routing(first)[0][0].numpy()
    from vsr.inspect import PALETTE
    assert (sheet[:, 34:64] == PALETTE[route]).all()
    assert "2 switched layers" in capsys.readouterr().out
    plain = tmp_path / "plain.safetensors"
    weights.save(arch.build("compact", nf=8, num_conv=1, upscale=4), plain)
    assert main(["inspect", "selectors", str(src), "-o", str(out), "--model", str(plain)]) == 1
    assert "no switched layers" in capsys.readouterr().err
