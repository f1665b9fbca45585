import pytest
import torch

from vsr import arch, weights
from vsr.arch import rrdb

from conftest import TINY_CASES, tiny


def call(desc, x):
    """The network's output for ``x`` by its contract; a sampled one at temperature 0 (all latents zero)."""
    if desc.contract == "sampled":
        return desc.model.reverse(x, [torch.zeros(x.shape[0], *s) for s in desc.model.latent_shapes(*x.shape[-2:])])
    return desc.model(x)


def training_loss(desc, x):
    if desc.contract == "sampled":  # a flow trains on the likelihood of the HR image
        hr = torch.rand(x.shape[0], 3, round(x.shape[-2] * desc.scale), round(x.shape[-1] * desc.scale))
        return desc.model(hr, x)[1].mean() + call(desc, x).mean()
    if desc.contract == "recurrent":  # with a previous frame and output, so its own weights count
        prev_y = torch.rand(x.shape[0], 3, x.shape[-2] * desc.scale, x.shape[-1] * desc.scale)
        return desc.model(x, x, prev_y).mean()
    return desc.model(x).mean()


@pytest.mark.parametrize("name,params", TINY_CASES)
def test_shape_roundtrip_determinism_backward(name, params):
    desc = tiny(name, **params)
    x = torch.rand(2, 3, 12, 16)
    with torch.no_grad():
        y = call(desc, x)
    assert y.shape == (2, 3, round(12 * desc.scale), round(16 * desc.scale))
    # state dict -> detection -> load gives the same network
    loaded = weights.detect(desc.model.state_dict(), **({"out_scale": params["out_scale"]}
                                                         if "out_scale" in params else {}))
    assert loaded.arch == name and loaded.scale == desc.scale
    assert {k: v for k, v in loaded.params.items()} == desc.params
    with torch.no_grad():
        assert torch.equal(call(loaded, x), y)
        assert torch.equal(call(desc, x), y)  # deterministic
    desc.model.train()
    desc.model.requires_grad_(True)
    training_loss(desc, x).backward()
    unused = set(getattr(desc.model, "head_parameter_names", list)())  # weights kept but never run
    for n, p in desc.model.named_parameters():
        assert n in unused or (p.grad is not None and torch.isfinite(p.grad).all()), n


def _old_layout(sd):
    out = {}
    nb = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("body."))
    top = {"conv_first": 0, "conv_up1": 3, "conv_up2": 6, "conv_hr": 8, "conv_last": 10}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "body":
            out[f"model.1.sub.{parts[1]}.RDB{parts[2][3]}.{parts[3]}.0.{parts[4]}"] = v
        elif parts[0] == "conv_body":
            out[f"model.1.sub.{nb}.{parts[1]}"] = v
        else:
            out[f"model.{top[parts[0]]}.{parts[1]}"] = v
    return out


def _master_layout(sd):
    names = {"conv_body": "trunk_conv", "conv_up1": "upconv1", "conv_up2": "upconv2", "conv_hr": "HRconv"}
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "body":
            out[f"RRDB_trunk.{parts[1]}.RDB{parts[2][3]}.{parts[3]}.{parts[4]}"] = v
        else:
            out[".".join([names.get(parts[0], parts[0])] + parts[1:])] = v
    return out


@pytest.mark.parametrize("layout", [dict, _old_layout, _master_layout])
def test_every_rrdb_key_layout_loads(layout):
    desc = tiny("rrdb", nf=8, nb=2, gc=4, scale=4)
    sd = layout(desc.model.state_dict())
    loaded = weights.detect(sd)
    assert loaded.params == desc.params
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), desc.model(x))


def test_full_size_rrdb_matches_the_published_parameter_count():
    m = rrdb.RRDBNet()
    assert sum(p.numel() for p in m.parameters()) == 16_697_987
    assert len(m.state_dict()) == 702


def test_registry_names_are_unique_and_unknown_is_an_error():
    assert len({a.name for a in arch.ARCHS}) == len(arch.ARCHS)
    with pytest.raises(ValueError, match="unknown architecture"):
        arch.get_arch("nope")
    with pytest.raises(ValueError, match="no parameter"):
        arch.build("rrdb", bogus=1)
