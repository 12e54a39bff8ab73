"""int8 on CPU: dynamic quantisation of every Linear layer for inference (weights int8, per
channel), and int8 storage of a checkpoint's matrices (`quantize_state` / `dequantize_state`).

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


SCALE_SUFFIX = ".int8_scale"
MIN_QUANTIZED_NUMEL = 4096  # smaller tensors (norms, biases, small convs) stay in float16


def quantize_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weight-only int8 storage: every floating matrix becomes int8 rows with one float32
    absmax scale per row (`name` + SCALE_SUFFIX); everything else is stored as float16.
    Halves a float16 checkpoint; `dequantize_state` restores float weights within half a step
    (scale / 2) of the original per element. Embedding rows (the tied output head) get their own
    scale each, so rare and frequent tokens keep their resolution."""
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if not t.is_floating_point():
            out[name] = t
        elif t.dim() >= 2 and t.numel() >= MIN_QUANTIZED_NUMEL:
            rows = t.float().reshape(t.shape[0], -1)
            scale = rows.abs().amax(dim=1).clamp_min(1e-12) / 127.0
            out[name] = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8).reshape(t.shape)
            out[name + SCALE_SUFFIX] = scale  # float32: a float16 scale would add its own rounding
        else:
            out[name] = t.to(torch.float16)
    return out


def dequantize_state(state: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The inverse of `quantize_state` (a state without int8 entries passes through unchanged)."""
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        scale = state.get(name + SCALE_SUFFIX)
        if scale is not None:
            if t.dtype != torch.int8:
                raise ValueError(f"{name}: a scale is stored for it but it is {t.dtype}, not int8")
            t = (t.float().reshape(t.shape[0], -1) * scale.float()[:, None]).reshape(t.shape).to(dtype)
        out[name] = t
    return out


__all__ = ["COMPUTE_TYPES", "dequantize_state", "quantize_int8", "quantize_state"]
