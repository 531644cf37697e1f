"""Which float type the frozen LLM runs in: a name, or "auto" (bfloat16 only where it is faster)."""

from __future__ import annotations

import functools
import time

import torch
import torch.nn.functional as F

from itemlm.errors import InputError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MIN_CPU_SPEEDUP = 1.2
"""How much faster than float32 a CPU's bfloat16 must measure for "auto" to take it."""


def fast_bfloat16(device: torch.device | str | None = None) -> bool:
    """Whether bfloat16 is the faster choice on `device` (default: CUDA when present, else the CPU).

    On a GPU: whether it supports bfloat16. On a CPU, support is not enough, so it is measured:
    without AVX-512-BF16 / AMX PyTorch emulates bfloat16 and a frozen-LLM training step runs tens
    of times slower (SmolLM2-135M forward + backward, batch 8, 2 AVX2 cores: 2.0 s in float32,
    77 s in bfloat16); with AVX-512-BF16, one 2-core AMD EPYC ran the step 2.5 times faster in
    bfloat16, and one 2-core Intel Xeon 1.9 times *slower* (5.2 s against 2.8 s: its bfloat16 matrix
    products and attention backward are slower than float32's). See `cpu_bfloat16_speedup`.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu" or not _mkldnn_bfloat16():
        return False
    return cpu_bfloat16_speedup() >= MIN_CPU_SPEEDUP


def _mkldnn_bfloat16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.lru_cache(maxsize=None)  # measured once per process (about half a second)
def cpu_bfloat16_speedup(repeats: int = 3) -> float:
    """float32 time / bfloat16 time of one small frozen-transformer training block on this CPU.

    The block is the part of a stage-2 step that dominates it on a CPU: causal attention and a
    SmolLM2-135M-sized MLP over a batch of 8 x 128 positions, backward to the input only (the
    LLM's weights are frozen). Best of `repeats` timed runs per type, after one untimed run.
    """
    return _block_seconds(torch.float32, repeats) / _block_seconds(torch.bfloat16, repeats)


def _block_seconds(dtype: torch.dtype, repeats: int) -> float:
    with torch.inference_mode(False), torch.enable_grad():  # callers may be inside no_grad or inference mode
        generator = torch.Generator().manual_seed(0)
        batch, positions, hidden, heads, inner = 8, 128, 576, 9, 1536
        up = (torch.randn(inner, hidden, generator=generator) / hidden**0.5).to(dtype)
        down = (torch.randn(hidden, inner, generator=generator) / inner**0.5).to(dtype)
        start = torch.randn(batch, positions, hidden, generator=generator).to(dtype)
        best = float("inf")
        for run in range(repeats + 1):
            x = start.clone().requires_grad_()
            began = time.perf_counter()
            per_head = x.view(batch, positions, heads, hidden // heads).transpose(1, 2)
            mixed = F.scaled_dot_product_attention(per_head, per_head, per_head, is_causal=True)
            out = F.silu(mixed.transpose(1, 2).reshape(batch, positions, hidden) @ up.T) @ down.T
            out.float().square().mean().backward()
            if run:  # the first run warms the kernels up
                best = min(best, time.perf_counter() - began)
    return best


def resolve_dtype(dtype: str | torch.dtype, device: torch.device | str | None = None) -> torch.dtype:
    """A dtype name, or "auto": bfloat16 where it is the faster choice on the device, float32 elsewhere."""
    if dtype == "auto":
        return torch.bfloat16 if fast_bfloat16(device) else torch.float32
    return parse_dtype(dtype)


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return resolve_dtype(dtype)
    if dtype not in DTYPES:
        raise InputError(f"unknown LLM dtype '{dtype}' (expected one of: auto, {', '.join(DTYPES)})")
    return DTYPES[dtype]
