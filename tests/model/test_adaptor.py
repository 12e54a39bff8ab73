"""Adaptor: frame rate, widths, lengths, and batch independence."""

from __future__ import annotations

import math

import pytest
import torch

from unisono.model.adaptor import Adaptor, adaptor_length
from unisono.model.config import AdaptorConfig


@pytest.mark.parametrize("stride,rate", [(2, 25.0), (4, 12.5)])
def test_rate_and_widths(stride, rate):
    torch.manual_seed(0)
    adaptor = Adaptor(AdaptorConfig(stride=stride, hidden_size=32), encoder_dim=24, decoder_dim=40)
    seconds = 3.0
    frames = torch.randn(1, int(50 * seconds), 24)  # 50 Hz encoder frames
    out, lengths = adaptor(frames, torch.tensor([frames.shape[1]]))
    assert out.shape == (1, math.ceil(rate * seconds), 40)
    assert int(lengths[0]) == out.shape[1]


@pytest.mark.parametrize("frames", [1, 2, 3, 4, 5, 7, 8, 149, 150])
def test_lengths_are_ceil(frames):
    adaptor = Adaptor(AdaptorConfig(stride=4, hidden_size=8), 4, 4)
    out, lengths = adaptor(torch.randn(1, frames, 4), torch.tensor([frames]))
    assert out.shape[1] == int(lengths[0]) == adaptor_length(frames, 4) == -(-frames // 4)


def test_batched_items_equal_alone():
    torch.manual_seed(1)
    adaptor = Adaptor(AdaptorConfig(stride=4, hidden_size=16), 8, 12).eval()
    a, b = torch.randn(37, 8), torch.randn(90, 8)
    batch = torch.full((2, 90, 8), 7.0)  # garbage in the padding must not leak
    batch[0, :37], batch[1] = a, b
    out, lengths = adaptor(batch, torch.tensor([37, 90]))
    alone_a, la = adaptor(a[None], torch.tensor([37]))
    torch.testing.assert_close(out[0, : int(lengths[0])], alone_a[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[1], adaptor(b[None], torch.tensor([90]))[0][0], rtol=1e-5, atol=1e-6)


def test_bad_config():
    with pytest.raises(ValueError, match="stride"):
        AdaptorConfig(stride=3)
    with pytest.raises(ValueError, match="odd"):
        Adaptor(AdaptorConfig(kernel_size=4), 4, 4)
