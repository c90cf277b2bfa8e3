"""The project's U-Net (Ronneberger, Fischer & Brox, 2015, https://arxiv.org/abs/1505.04597).

An encoder of `depth` down-sampling stages (two 3x3 conv + BatchNorm + ReLU per stage, max-pool between),
a mirrored decoder that upsamples (bilinear, or a transposed conv) and concatenates the encoder's skip
features, and a 1x1 head giving `num_classes` logits at the input resolution.

Unlike the paper we use padded ("same") convolutions, so any input size works: when an odd size makes the
upsampled map one pixel short of its skip, the upsampled map is padded to the skip's size *inside* the
network, per image. The batch is never padded, so a semantic model sees each image exactly as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_DEPTH = 4
DEFAULT_BASE_WIDTH = 64


class DoubleConv(nn.Sequential):
    """(conv 3x3 => BatchNorm => ReLU) twice."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Up(nn.Module):
    """Upsample by 2, match the skip's size, concatenate, DoubleConv."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, *, bilinear: bool) -> None:
        super().__init__()
        if bilinear:
            self.up: nn.Module = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, in_channels // 2, kernel_size=1),
            )
        else:
            self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels // 2 + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        dy = skip.shape[-2] - x.shape[-2]
        dx = skip.shape[-1] - x.shape[-1]
        if dy or dx:  # odd input sizes: floor-division in the pooling loses a row/column
            x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        out: torch.Tensor = self.conv(torch.cat([skip, x], dim=1))
        return out


class UNet(nn.Module):
    """U-Net with configurable depth (number of 2x down-samplings) and base width (channels of stage 0).

    >>> net = UNet(num_classes=3, depth=2, base_width=4).eval()
    >>> net(torch.zeros(1, 3, 13, 17)).shape
    torch.Size([1, 3, 13, 17])
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 3,
        depth: int = DEFAULT_DEPTH,
        base_width: int = DEFAULT_BASE_WIDTH,
        bilinear: bool = True,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"unet depth must be >= 1, got {depth}")
        if base_width < 2 or num_classes < 1:
            raise ValueError(f"unet needs base_width >= 2 and num_classes >= 1, got {base_width}, {num_classes}")
        self.depth = depth
        self.base_width = base_width
        self.num_classes = num_classes
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.inc = DoubleConv(in_channels, widths[0])
        self.downs = nn.ModuleList(DoubleConv(widths[i], widths[i + 1]) for i in range(depth))
        self.ups = nn.ModuleList(
            Up(widths[i + 1], widths[i], widths[i], bilinear=bilinear) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(F.max_pool2d(skips[-1], kernel_size=2)))
        y = skips.pop()
        for up in self.ups:
            y = up(y, skips.pop())
        logits: torch.Tensor = self.head(y)
        return logits
