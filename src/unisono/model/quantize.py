"""int8 inference on CPU: dynamic quantisation of every Linear layer (weights int8, per channel).

On a CPU the decoder's matrix products over a few rows (one token, or the 6 tokens of an
MTP verification pass) are limited by the kernel rather than by arithmetic: fp32 GEMM over 6
rows costs ~2.5x one row here, while fbgemm's int8 kernels cost ~1.3x, and read 4x fewer
bytes. This is what faster-whisper's `compute_type="int8"` does on CPU.

Activations are quantised per call with one scale for the whole input, so a pass over 6
tokens does not round exactly as 6 passes over one token do: MTP-verified decoding is then
greedy decoding of the quantised model up to that rounding (bench/mtp_vs_greedy.py reports
how often the outputs agree). float32 keeps the exact equality.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

COMPUTE_TYPES = ("float32", "int8")


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace the Linear layers of `model` in place by dynamically quantised int8 ones."""
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("int8 dynamic quantisation runs on the CPU; use float32/float16/bfloat16 on a GPU")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao announces its successor; the kernels are the same fbgemm ones
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)


__all__ = ["COMPUTE_TYPES", "quantize_int8"]
