"""VGG-style discriminator (ESRGAN's layout of conv stacks that halve the size, then a linear head).

No batch normalisation: real and fake images go through one call (exact under
DistributedDataParallel) and the R1 gradient penalty stays per-sample. Average pooling to 4x4
before the head lets it judge any patch size of at least 2**levels * 4 pixels.
"""
from __future__ import annotations

import torch
from torch import nn


class VGGDiscriminator(nn.Module):
    def __init__(self, *, in_ch: int = 3, nf: int = 64, levels: int = 5) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_ch, nf, 3, 1, 1), nn.LeakyReLU(0.2, True)]
        c = nf
        for i in range(levels):
            out = nf * min(2 ** (i + 1), 8)
            layers += [nn.Conv2d(c, c, 4, 2, 1), nn.LeakyReLU(0.2, True),
                       nn.Conv2d(c, out, 3, 1, 1), nn.LeakyReLU(0.2, True)]
            c = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(c * 16, 100),
                                  nn.LeakyReLU(0.2, True), nn.Linear(100, 1))
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 1) logits
        if min(x.shape[-2:]) < 4 * 2 ** self.levels:
            raise ValueError(f"discriminator with {self.levels} levels needs inputs of at least "
                             f"{4 * 2 ** self.levels} px, got {tuple(x.shape[-2:])}")
        return self.head(self.features(x))


# the networks a recipe may train as discriminators, by arch name
DISCRIMINATORS = {"vgg_discriminator": VGGDiscriminator}
