"""The project's U-Net: any input size, configurable depth/width, no cross-image mixing in a batch."""

from __future__ import annotations

import pytest
import torch

from segpipe.inference.unet import UNet

torch.set_num_threads(1)


@pytest.mark.parametrize("bilinear", [True, False])
@pytest.mark.parametrize(("h", "w"), [(16, 16), (13, 17), (31, 9), (8, 8)])
def test_output_has_input_size(bilinear: bool, h: int, w: int) -> None:
    net = UNet(num_classes=3, depth=3, base_width=4, bilinear=bilinear).eval()
    with torch.inference_mode():
        assert net(torch.randn(2, 3, h, w)).shape == (2, 3, h, w)


def test_depth_and_width_set_the_channels() -> None:
    net = UNet(num_classes=2, depth=2, base_width=6)
    widths = [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert max(widths) == 6 * 2**2
    assert len(net.downs) == 2 and len(net.ups) == 2
    deeper = UNet(num_classes=2, depth=3, base_width=6)
    assert sum(p.numel() for p in deeper.parameters()) > sum(p.numel() for p in net.parameters())


def test_skips_are_concatenated() -> None:
    net = UNet(num_classes=2, depth=2, base_width=4)
    # decoder stage input = upsampled (in/2) + skip channels
    assert net.ups[0].conv[0].in_channels == 8 + 8
    assert net.ups[1].conv[0].in_channels == 4 + 4


def test_batch_items_do_not_mix_in_eval_mode() -> None:
    torch.manual_seed(0)
    net = UNet(num_classes=2, depth=2, base_width=4).eval()
    a, b = torch.randn(1, 3, 20, 24), torch.randn(1, 3, 20, 24)
    with torch.inference_mode():
        batched = net(torch.cat([a, b]))
        assert torch.allclose(batched[0], net(a)[0], atol=1e-5)
        assert torch.allclose(batched[1], net(b)[0], atol=1e-5)


def test_bad_configuration_rejected() -> None:
    with pytest.raises(ValueError, match="depth"):
        UNet(num_classes=2, depth=0)
    with pytest.raises(ValueError, match="base_width"):
        UNet(num_classes=2, base_width=1)
