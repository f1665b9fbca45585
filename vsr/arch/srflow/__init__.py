"""SRFlow: the conditional flow (:mod:`.net`), its invertible layers (:mod:`.layers`), and how its state
dicts are recognised.

Key layouts. Ours: ``encoder.*`` (the conditioning RRDBNet, BasicSR names as in :mod:`vsr.arch.rrdb`)
and ``flow.layers.{i}.*`` (the flow, one index per layer in encoding order, squeezes included, with
the authors' per-layer names). The authors' released checkpoints: ``RRDB.*`` (ESRGAN master names,
``upconv3`` at x8) and ``flowUpsamplerNet.layers.{i}.*`` (the same indices and names), plus
``flowUpsamplerNet.f.*``, a conv no forward pass uses, which is dropped on loading. Their layout also
selects their RRDBNet's conventions (``authors_rrdb``, see :mod:`.net`), which a re-saved file keeps in
its ``vsr.params``.
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import torch

from .. import rrdb
from .net import PLAIN_STEPS, SRFlowNet

StateDict = dict[str, torch.Tensor]

_LAYER = re.compile(r"^flow\.layers\.(\d+)\.(.+)$")


def to_our_layout(sd: StateDict) -> StateDict | None:
    """Our key layout from ours or the authors'; None if ``sd`` is not an SRFlow state dict."""
    if "encoder.conv_first.weight" in sd and "flow.layers.1.actnorm.bias" in sd:
        return dict(sd)
    if "RRDB.conv_first.weight" not in sd or "flowUpsamplerNet.layers.1.actnorm.bias" not in sd:
        return None
    encoder: StateDict = {}
    out: StateDict = {}
    for k, v in sd.items():
        if k.startswith("RRDB."):
            encoder[k[len("RRDB."):]] = v
        elif k.startswith("flowUpsamplerNet.layers."):
            out["flow." + k[len("flowUpsamplerNet."):]] = v
        elif not k.startswith("flowUpsamplerNet.f."):  # the unused conv goes; anything else is foreign
            return None
    up3 = {k: encoder.pop(k) for k in list(encoder) if k.startswith("upconv3.")}  # x8 only
    converted = rrdb.to_basicsr_layout(encoder)
    if converted is None:
        return None
    converted.update({"conv_up3." + k[len("upconv3."):]: v for k, v in up3.items()})
    out.update({"encoder." + k: v for k, v in converted.items()})
    return out


STEP_KEYS = ("actnorm.bias", "actnorm.logs", "invconv.weight")  # every flow step has these


def params_from_state_dict(sd: StateDict) -> dict[str, Any]:
    """Constructor arguments of :class:`SRFlowNet` from a state dict in our layout."""
    first = sd["encoder.conv_first.weight"]
    nf = first.shape[0]
    nb = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.body."))
    gc = sd["encoder.body.0.rdb1.conv1.weight"].shape[0]
    ups = sum(1 for k in sd if re.fullmatch(r"encoder\.conv_up\d+\.weight", k))
    layers: dict[int, set[str]] = defaultdict(set)
    for k in sd:
        if m := _LAYER.match(k):
            layers[int(m[1])].add(m[2])
    # walk the flow: an index without tensors is a squeeze (a new level)
    levels: list[list[str]] = []
    for i in range(max(layers) + 1):
        names = layers.get(i)
        if not names:
            levels.append([])
        elif not levels:
            raise ValueError("SRFlow flow does not start with a squeeze (layer 0 has tensors)")
        elif any(n.startswith(("actnorm.", "invconv.")) for n in names):
            absent = [f"flow.layers.{i}.{n}" for n in STEP_KEYS if n not in names]
            if absent:
                raise ValueError(f"SRFlow flow step {i} lacks {', '.join(absent)}")
            levels[-1].append("coupling" if any(n.startswith("affine.") for n in names) else "plain")
        elif "conv.weight" in names:
            levels[-1].append("split")
        else:
            raise ValueError(f"SRFlow flow layer {i} is neither a flow step nor a split: {sorted(names)[:3]}")
    K = levels[0].count("coupling")
    coupling = next((i for i, n in layers.items() if "affine.fFeatures.0.weight" in n), None)
    if coupling is None:
        hidden, cond_ch = 64, nf * 5
    else:
        hidden, cond_ch = sd[f"flow.layers.{coupling}.affine.fFeatures.0.weight"].shape[:2]
    if cond_ch % nf:
        raise ValueError(f"SRFlow conditioning has {cond_ch} channels, expected a multiple of nf={nf}")
    L = len(levels)
    expected = [["plain"] * PLAIN_STEPS + ["coupling"] * K + (["split"] if i < L - 2 else []) for i in range(L)]
    if levels != expected:
        raise ValueError(f"SRFlow flow layers do not follow the expected pattern ({PLAIN_STEPS} plain steps, "
                         f"{K} couplings, splits after levels 1..{L - 2}) per level")
    return {"scale": 2 ** ups, "nf": nf, "nb": nb, "gc": gc, "K": K, "L": L, "hidden": int(hidden),
            "cond_blocks": cond_ch // nf - 1}


def detect(sd: StateDict) -> tuple[dict[str, Any], StateDict] | None:
    converted = to_our_layout(sd)
    if converted is None:
        return None
    params = params_from_state_dict(converted)
    if "RRDB.conv_first.weight" in sd:  # trained with the authors' code: their RRDBNet computes so
        params["authors_rrdb"] = True
    return params, converted


__all__ = ["SRFlowNet", "detect", "params_from_state_dict", "to_our_layout"]
