"""The counter-based RNG of csrc/prge/counter_rng.h in plain torch ops (xor, and,
multiply, right shift on int64 holding uint32 values; multipliers below 2^31 so nothing
overflows), so it traces into torch.export / ONNX / AOTInductor graphs and yields the
same integers as the C++ engine's `estimator.rng: counter`."""
from __future__ import annotations

import math

import torch

from prge._core import (COUNTER_RNG_MASK32 as MASK32, COUNTER_RNG_MUL1 as MUL1, COUNTER_RNG_MUL2 as MUL2,
                        COUNTER_RNG_QUERIES_PER_PARAM as QUERIES_PER_PARAM)


def mix32_int(x: int) -> int:
    x &= MASK32
    x ^= x >> 16
    x = (x * MUL1) & MASK32
    x ^= x >> 15
    x = (x * MUL2) & MASK32
    return x ^ (x >> 16)


def shift_right(x: torch.Tensor, bits: int, mode: str = "shift") -> torch.Tensor:
    """x >> bits for 0 <= x < 2^32. Two spellings with identical integers, for exporters:
    'shift' (ONNX lowers integer floor division through float32, so shift it is) and
    'divide' (ExecuTorch's core ATen opset has no right shift; its division is integer)."""
    if mode == "shift":
        return torch.bitwise_right_shift(x, bits)
    if mode == "divide":
        return torch.div(x, 1 << bits, rounding_mode="floor")
    raise ValueError(f"unknown shift mode '{mode}' (allowed: shift, divide)")


def mix32(x: torch.Tensor, mode: str = "shift") -> torch.Tensor:
    x = torch.bitwise_xor(x, shift_right(x, 16, mode))
    x = torch.bitwise_and(x * MUL1, MASK32)
    x = torch.bitwise_xor(x, shift_right(x, 15, mode))
    x = torch.bitwise_and(x * MUL2, MASK32)
    return torch.bitwise_xor(x, shift_right(x, 16, mode))


def coordinate_hashes(param_index: int, queries: int) -> list[int]:
    """mix32(p * QUERIES_PER_PARAM + i) for each query i: the per-(parameter, query) part of the key."""
    if queries > QUERIES_PER_PARAM:
        raise ValueError(f"counter rng supports at most {QUERIES_PER_PARAM} queries")
    return [mix32_int(param_index * QUERIES_PER_PARAM + i) for i in range(queries)]


def stream_keys(step_key: torch.Tensor, coordinates: torch.Tensor, mode: str = "shift") -> torch.Tensor:
    """[q] int64 stream keys from the 32-bit step key (0-d int64) and coordinate hashes."""
    return mix32(torch.bitwise_xor(mix32(step_key, mode), coordinates), mode)


def noise(keys: torch.Tensor, n: int, gaussian: bool = True, mode: str = "shift") -> torch.Tensor:
    """[q, n] float32: row i is the stream of keys[i] (Box-Muller Gaussian or Rademacher)."""
    count = 2 * n if gaussian else n
    counters = mix32(torch.arange(count, dtype=torch.int64, device=keys.device), mode)
    bits = mix32(torch.bitwise_xor(counters.unsqueeze(0), keys.unsqueeze(1)), mode)
    if not gaussian:
        return (1 - 2 * shift_right(bits, 31, mode)).to(torch.float32)
    u = (shift_right(bits, 8, mode).to(torch.float32) + 0.5) * (1.0 / (1 << 24))
    u1, u2 = u[:, :n], u[:, n:]
    return torch.sqrt(torch.log(u1) * -2.0) * torch.cos(u2 * (2.0 * math.pi))
