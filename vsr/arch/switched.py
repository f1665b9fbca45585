"""Switched convolutions: a spatial mixture of experts. A layer holds ``breadth`` kernels; a selector
(a 1x1 convolution of the layer's input) scores them at every output pixel, SwitchNorm evens out how
often each is used, and each pixel is computed with its top-scoring kernel alone.

- Routing is hard top-1 with the differentiable argmax: forward, the one-hot of the argmax; backward,
  the gradient at the chosen kernel divided by its probability (zero elsewhere). The output is the
  chosen kernel's response times that one-hot value (1), which is the selector's gradient path.
- SwitchNorm keeps the last ``q`` usage vectors (per-kernel probability summed over batch and space,
  divided by its mean) in a rotating buffer, updated in training only; once the buffer is full the
  probabilities are divided by its mean (rescaled to sum to ``breadth``). The buffer is model state:
  it is saved with the weights, and inference without it routes differently.
- Efficient path (the default): one dot product per output pixel with its chosen kernel. The pixels'
  patches (im2col) are sorted by kernel and each group is one matrix product, so the cost stays near
  one convolution's whatever the breadth. ``naive`` (every kernel everywhere, then the one-hot mix:
  ``breadth`` times the work) is kept as the oracle the tests compare against.
- :func:`convert` turns trained ``Conv2d`` layers into switched ones with the kernel copied into every
  slot, so the network computes exactly what it did until training moves the kernels apart.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .compact import CompactNet


class _DiffArgmax(torch.autograd.Function):
    """Forward: the argmax over kernels, and the one-hot's value there (1). Backward: the gradient at the
    chosen kernel divided by its probability, zero elsewhere (the one-hot's other entries are constants
    whose gradient is zero)."""

    @staticmethod
    def forward(ctx, probs: torch.Tensor):  # (B, b, H, W) -> route (B, H, W), gate (B, 1, H, W)
        route = probs.max(dim=1, keepdim=True).indices  # (argmax over dim 1 is many times slower on CPUs)
        ctx.save_for_backward(probs, route)
        ctx.mark_non_differentiable(route)
        return route[:, 0], torch.ones_like(probs[:, :1])

    @staticmethod
    def backward(ctx, _, grad: torch.Tensor) -> torch.Tensor:
        probs, route = ctx.saved_tensors
        chosen = probs.gather(1, route).clamp_min(1e-12)
        return torch.zeros_like(probs).scatter_(1, route, grad / chosen)


def hard_route(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 routing with the differentiable argmax: (route (B, H, W) long, gate (B, 1, H, W)): the
    one-hot of the per-pixel argmax over dim 1, at the chosen kernel."""
    return _DiffArgmax.apply(probs)


class SwitchNorm(nn.Module):
    def __init__(self, breadth: int, q: int = 256) -> None:
        super().__init__()
        self.register_buffer("history", torch.zeros(q, breadth))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def forward(self, probs: torch.Tensor) -> torch.Tensor:  # (B, b, H, W) probabilities
        q, b = self.history.shape
        if self.training:
            with torch.no_grad():
                usage = probs.detach().float().sum(dim=(0, 2, 3))
                self.history[int(self.count) % q] = usage / usage.mean().clamp_min(1e-12)
                self.count += 1
        if int(self.count) < q:
            return probs
        mean = self.history.mean(dim=0)
        mean = mean / mean.sum() * b
        return probs / mean.clamp_min(1e-6).to(probs.dtype).view(1, b, 1, 1)


CHUNK = 1024  # output pixels per matrix product: their patches stay in cache from gather to scatter


class _SwitchedConv(torch.autograd.Function):
    """One dot product per output pixel with its chosen kernel. The pixels are sorted by kernel; chunk by
    chunk, their windows are gathered straight from the padded channels-last input into a patch matrix,
    multiplied by that kernel, and (backward) gathered again and their gradients scatter-added back into
    the input: im2col and col2im fused with the sort, so no whole-image patch matrix is ever written.
    ``gate`` (B, 1, Ho, Wo) multiplies each pixel's output (the selector's gradient path)."""

    @staticmethod
    def forward(ctx, x, weight, bias, gate, route, stride: int, padding: int, breadth: int):
        n, c = x.shape[:2]
        k = weight.shape[-1]
        out_ch = weight.shape[0] // breadth
        _, ho, wo = route.shape
        xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, padding, padding, padding, padding))  # (B, Hp, Wp, C)
        hp, wp = xp.shape[1:3]
        xp = xp.reshape(-1, c)
        flat = route.reshape(-1)
        order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=breadth).tolist()
        dev = x.device
        corner = (torch.arange(n, device=dev).view(-1, 1, 1) * (hp * wp)
                  + torch.arange(ho, device=dev).view(1, -1, 1) * (stride * wp)
                  + torch.arange(wo, device=dev).view(1, 1, -1) * stride).reshape(-1)
        taps = (torch.arange(k, device=dev).view(-1, 1) * wp + torch.arange(k, device=dev).view(1, -1)).reshape(-1)
        index = corner.index_select(0, order).view(-1, 1) + taps  # (N, k*k): rows of xp, sorted by kernel
        w = weight.view(breadth, out_ch, c, k, k).permute(0, 1, 3, 4, 2).reshape(breadth, out_ch, k * k * c)
        g = gate.reshape(-1).index_select(0, order).view(-1, 1)
        out = xp.new_empty(flat.numel(), out_ch)  # sorted, before the gate
        for e, rows in _chunks(counts):
            cols = xp.index_select(0, index[rows].reshape(-1)).view(-1, k * k * c)
            if bias is None:
                torch.mm(cols, w[e].t(), out=out[rows])
            else:
                torch.addmm(bias[e * out_ch:(e + 1) * out_ch], cols, w[e].t(), out=out[rows])
        y = torch.empty_like(out).index_copy_(0, order, out * g)
        ctx.save_for_backward(xp, w, g, out, order, index)
        ctx.shape = (n, c, hp, wp, padding, k, breadth, counts, bias is not None)
        ctx.gate_shape = gate.shape
        ctx.channels_last = x.is_contiguous(memory_format=torch.channels_last)
        y = y.view(n, ho, wo, out_ch).permute(0, 3, 1, 2)  # NCHW in channels-last memory
        return y if ctx.channels_last else y.contiguous()  # the input's layout, as a convolution's output

    @staticmethod
    def backward(ctx, grad):
        xp, w, g, out, order, index = ctx.saved_tensors
        n, c, hp, wp, padding, k, breadth, counts, has_bias = ctx.shape
        out_ch = w.shape[1]
        grad = grad.permute(0, 2, 3, 1).reshape(-1, out_ch).index_select(0, order)  # sorted like out
        grad_gate = torch.empty_like(grad[:, 0]).index_copy_(0, order, (grad * out).sum(1))
        grad = grad * g
        gx = xp.new_zeros(xp.shape) if ctx.needs_input_grad[0] else None
        grad_w = w.new_zeros(w.shape)
        grad_b = w.new_zeros(breadth, out_ch)
        for e, rows in _chunks(counts):
            idx = index[rows].reshape(-1)
            gr = grad[rows]
            grad_w[e].addmm_(gr.t(), xp.index_select(0, idx).view(-1, k * k * c))
            grad_b[e] += gr.sum(0)
            if gx is not None:
                gx.index_add_(0, idx, torch.mm(gr, w[e]).view(-1, c))
        grad_x = None
        if gx is not None:
            gx = gx.view(n, hp, wp, c)
            grad_x = gx[:, padding:hp - padding, padding:wp - padding].permute(0, 3, 1, 2)
            grad_x = grad_x.contiguous(memory_format=torch.channels_last if ctx.channels_last else
                                       torch.contiguous_format)
        grad_weight = grad_w.view(breadth, out_ch, k, k, c).permute(0, 1, 4, 2, 3).reshape(breadth * out_ch, c, k, k)
        return (grad_x, grad_weight, grad_b.view(-1) if has_bias else None, grad_gate.view(ctx.gate_shape),
                None, None, None, None)


def _chunks(counts: list[int]):
    """(kernel, rows) over the sorted pixels: each kernel's block of rows, cut into CHUNK-sized pieces."""
    first = 0
    for e, count in enumerate(counts):
        for start in range(first, first + count, CHUNK):
            yield e, slice(start, min(start + CHUNK, first + count))
        first += count


def switched_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, route: torch.Tensor,
                  stride: int, padding: int, breadth: int, gate: torch.Tensor | None = None) -> torch.Tensor:
    """The efficient path. x (B, C, H, W); weight (b * O, C, k, k), kernel e at rows e * O ..; bias (b * O);
    route (B, Ho, Wo) long; gate (B, 1, Ho, Wo) multiplies the output (default 1). Under autocast it
    computes in the autocast type, as a convolution would."""
    dev = x.device.type
    if gate is None:
        gate = x.new_ones(route.shape[0], 1, *route.shape[1:])
    if torch.is_autocast_enabled(dev):
        dtype = torch.get_autocast_dtype(dev)
        x, weight, gate = x.to(dtype), weight.to(dtype), gate.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
    with torch.autocast(dev, enabled=False):
        return _SwitchedConv.apply(x, weight, bias, gate.to(x.dtype), route, stride, padding, breadth)


def switched_conv_naive(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, route: torch.Tensor,
                        stride: int, padding: int, breadth: int) -> torch.Tensor:
    """Every kernel at every pixel, then the chosen one's response: the oracle."""
    b, out_ch = breadth, weight.shape[0] // breadth
    full = F.conv2d(x, weight, bias, stride=stride, padding=padding)
    full = full.view(x.shape[0], b, out_ch, *full.shape[-2:])
    idx = route[:, None, None].expand(-1, 1, out_ch, -1, -1)
    return full.gather(1, idx)[:, 0]


class SwitchedConv2d(nn.Module):
    """``breadth`` kernels of a ``Conv2d(in_ch, out_ch, kernel_size, stride, padding)``, one per pixel."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0, *,
                 breadth: int = 8, bias: bool = True, q: int = 256, dropout: float = 0.0) -> None:
        super().__init__()
        if breadth < 1:
            raise ValueError(f"switched convolution breadth must be at least 1, got {breadth}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"expert dropout must be in [0, 1), got {dropout}")
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.breadth, self.dropout = breadth, dropout
        # 4-D like a Conv2d's (memory formats apply): kernel e is rows e * out_ch .. (e + 1) * out_ch
        self.weight = nn.Parameter(torch.empty(breadth * out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(breadth * out_ch)) if bias else None
        for e in range(breadth):
            nn.init.kaiming_uniform_(self.weight[e * out_ch:(e + 1) * out_ch], a=5 ** 0.5)
        self.selector = nn.Conv2d(in_ch, breadth, 1)  # on the input at each output pixel's window centre
        self.norm = SwitchNorm(breadth, q)
        self.naive = False  # the oracle path

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, breadth: int, **kw) -> "SwitchedConv2d":
        k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        if conv.kernel_size[0] != conv.kernel_size[1] or conv.stride[0] != conv.stride[1] or \
                conv.padding[0] != conv.padding[1] or conv.groups != 1 or conv.dilation != (1, 1) or \
                conv.padding_mode != "zeros":
            raise ValueError(f"cannot switch {conv}: square kernels, strides and zero padding, groups 1 only")
        new = cls(conv.in_channels, conv.out_channels, k, s, p, breadth=breadth, bias=conv.bias is not None, **kw)
        with torch.no_grad():
            new.weight.copy_(conv.weight.detach().repeat(breadth, 1, 1, 1))
            if conv.bias is not None:
                new.bias.copy_(conv.bias.detach().repeat(breadth))
        return new.to(conv.weight.device, conv.weight.dtype)

    def _centres(self, x: torch.Tensor) -> torch.Tensor:
        """The input at the centre of every output pixel's window: (B, C, Ho, Wo)."""
        k, s, p = self.kernel_size, self.stride, self.padding
        if s == 1 and 2 * p == k - 1:
            return x  # a "same" convolution: every input pixel is a centre
        if p:
            x = F.pad(x, (p, p, p, p))
        ho, wo = (x.shape[-2] - k) // s + 1, (x.shape[-1] - k) // s + 1
        c = k // 2
        return x[:, :, c:c + s * (ho - 1) + 1:s, c:c + s * (wo - 1) + 1:s]

    def routing(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(route (B, Ho, Wo) long, gate (B, 1, Ho, Wo): 1 forward, the selector's gradient backward)."""
        probs = self.norm(torch.softmax(self.selector(self._centres(x)).float(), dim=1))
        if self.training and self.dropout > 0:
            keep = torch.rand(self.breadth, device=x.device) >= self.dropout
            keep[torch.randint(self.breadth, (1,), device=x.device)] = True  # never all dropped
            probs = probs * keep.view(1, -1, 1, 1)
        route, gate = hard_route(probs)
        return route, gate.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        route, gate = self.routing(x)
        if self.naive:
            return switched_conv_naive(x, self.weight, self.bias, route, self.stride, self.padding, self.breadth) * gate
        return switched_conv(x, self.weight, self.bias, route, self.stride, self.padding, self.breadth, gate)


def convert(module: nn.Module, breadth: int, *, skip: tuple[str, ...] = (), **kw) -> nn.Module:
    """Every ``Conv2d`` of ``module`` (except those whose dotted names are in ``skip``) replaced, in place,
    by a switched layer whose every kernel is the original's: the outputs do not change."""
    for full, child in list(module.named_modules()):
        if isinstance(child, nn.Conv2d) and full not in skip:
            parent, _, name = full.rpartition(".")
            setattr(module.get_submodule(parent), name, SwitchedConv2d.from_conv(child, breadth, **kw))
    return module


class SwitchedCompactNet(CompactNet):
    """Real-ESRGAN's compact network with its inner convolutions switched (the first and the last stay
    plain): ``body.{2i}`` for i = 1..num_conv are :class:`SwitchedConv2d` of ``breadth`` kernels."""

    def __init__(self, *, in_ch: int = 3, out_ch: int = 3, nf: int = 64, num_conv: int = 16, upscale: int = 4,
                 breadth: int = 8) -> None:
        super().__init__(in_ch=in_ch, out_ch=out_ch, nf=nf, num_conv=num_conv, upscale=upscale)
        last = str(len(self.body) - 1)
        convert(self.body, breadth, skip=("0", last))
        self.breadth = breadth


def from_compact(compact: CompactNet, breadth: int = 8) -> SwitchedCompactNet:
    """A trained compact network as a switched one that computes the same (the staged recipe's step 2)."""
    if compact.out_scale != 1.0:
        raise ValueError("only compact networks without a final resize (out_scale 1) can be switched")
    body = compact.body
    net = SwitchedCompactNet(in_ch=body[0].in_channels, out_ch=body[-1].out_channels // compact.upscale ** 2,
                             nf=body[0].out_channels, num_conv=(len(body) - 3) // 2, upscale=compact.upscale,
                             breadth=breadth)
    for i, layer in enumerate(body):
        target = net.body[i]
        if isinstance(target, SwitchedConv2d):
            net.body[i] = SwitchedConv2d.from_conv(layer, breadth)
        else:
            target.load_state_dict(layer.state_dict())
    return net.to(body[0].weight.device)


def params_from_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, int] | None:
    """Constructor arguments from a switched compact network's state dict, or None if it is not one."""
    switched = sorted(int(k.split(".")[1]) for k in sd if k.startswith("body.") and k.endswith(".selector.weight"))
    if not switched or "body.0.weight" not in sd:
        return None
    num_conv = len(switched)
    if switched != list(range(2, 2 * num_conv + 1, 2)):
        raise ValueError(f"switched compact net: switched layers at body {switched}, expected 2, 4, .. {2 * num_conv}")
    first, last = sd["body.0.weight"], sd.get(f"body.{2 * num_conv + 2}.weight")
    if last is None:
        raise ValueError(f"switched compact net: no last convolution body.{2 * num_conv + 2}")
    in_ch, nf = first.shape[1], first.shape[0]
    breadth = sd["body.2.selector.weight"].shape[0]
    r2, rem = divmod(last.shape[0], in_ch)
    upscale = round(r2 ** 0.5)
    if rem or upscale * upscale != r2:
        raise ValueError(f"switched compact net: last conv has {last.shape[0]} outputs, expected 3*r*r")
    return {"in_ch": in_ch, "out_ch": in_ch, "nf": nf, "num_conv": num_conv, "upscale": upscale, "breadth": breadth}
