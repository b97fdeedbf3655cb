"""GGUF's quantized blocks repacked, exactly, into prge's quantized-weight format
(csrc/prge/quantized_weight.h: w = q * scale + offset per group of columns; q an int8, or a
4-bit code two per byte, low nibble first). The codes are taken from the block bytes directly;
only the scales become float32 (an fp16 block scale times a sub-block scale is exact there).

| GGUF type | block | becomes |
|---|---|---|
| Q8_0 | 32: fp16 d, int8 q | 8-bit, groups of 32, scale d |
| Q4_0 | 32: fp16 d, 4-bit q | 4-bit, groups of 32, scale d, offset -8 d |
| Q4_1 | 32: fp16 d, fp16 m, 4-bit q | 4-bit, groups of 32, scale d, offset m |
| Q5_0 | 32: fp16 d, 5-bit q (high bits apart) | 8-bit (q - 16), groups of 32, scale d |
| Q4_K | 256: fp16 d, dmin, 8 x 6-bit (scale, min), 4-bit q | 4-bit, groups of 32, scale d * sc, offset -dmin * m |
| Q6_K | 256: 16 x int8 scale, fp16 d, 6-bit q | 8-bit (q - 32), groups of 16, scale d * sc |

Other types (Q2_K, Q3_K, Q5_K, Q5_1, IQ*) are dequantized to float32 by the caller."""
from __future__ import annotations

import numpy as np

BLOCK_BYTES = {"Q8_0": 34, "Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q4_K": 144, "Q6_K": 210}


def _halves(raw: np.ndarray) -> np.ndarray:
    """Little-endian fp16 from pairs of bytes [..., 2] -> float32 [...]."""
    return np.ascontiguousarray(raw).view("<f2")[..., 0].astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """ggml's 32-element 4-bit layout: byte j holds element j (low nibble) and j + 16 (high)."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _pack4(codes: np.ndarray) -> np.ndarray:
    """[rows, cols] codes 0..15 -> [rows, cols / 2] bytes, the even column in the low nibble."""
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)


def _k_scales(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K's 12 bytes -> the 8 six-bit (scale, min) pairs of its 32-element sub-blocks."""
    s = scales.astype(np.uint8)
    sc, mn = np.empty(s.shape[:-1] + (8,), np.uint8), np.empty(s.shape[:-1] + (8,), np.uint8)
    sc[..., :4] = s[..., 0:4] & 63
    mn[..., :4] = s[..., 4:8] & 63
    sc[..., 4:] = (s[..., 8:12] & 0x0F) | ((s[..., 0:4] >> 6) << 4)
    mn[..., 4:] = (s[..., 8:12] >> 4) | ((s[..., 4:8] >> 6) << 4)
    return sc, mn


def repack(kind: str, data: np.ndarray, rows: int, cols: int):
    """(bits, group_size, qweight, scales, offsets or None) of a GGUF tensor of type `kind`
    whose bytes are `data` [rows, bytes per row]; None for a type prge does not keep."""
    if kind not in BLOCK_BYTES:
        return None
    size = BLOCK_BYTES[kind]
    blocks = data.reshape(rows, -1, size)
    if kind == "Q8_0":
        d = _halves(blocks[..., 0:2])
        q = blocks[..., 2:].view(np.int8).reshape(rows, cols)
        return 8, 32, q, d, None
    if kind in ("Q4_0", "Q4_1"):
        d = _halves(blocks[..., 0:2])
        start = 2 if kind == "Q4_0" else 4
        codes = _nibbles(blocks[..., start:start + 16]).reshape(rows, cols)
        offsets = -8.0 * d if kind == "Q4_0" else _halves(blocks[..., 2:4])
        return 4, 32, _pack4(codes), d, offsets.astype(np.float32)
    if kind == "Q5_0":
        d = _halves(blocks[..., 0:2])
        high = np.ascontiguousarray(blocks[..., 2:6]).view("<u4")[..., 0]  # bit j: element j's fifth bit
        bits = ((high[..., None] >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)
        codes = _nibbles(blocks[..., 6:22]) | (bits << 4)
        return 8, 32, (codes.astype(np.int16) - 16).astype(np.int8).reshape(rows, cols), d, None
    if kind == "Q4_K":
        d, dmin = _halves(blocks[..., 0:2]), _halves(blocks[..., 2:4])
        sc, mn = _k_scales(blocks[..., 4:16])
        qs = blocks[..., 16:144].reshape(rows, -1, 4, 32)  # 4 chunks of 64 elements, 32 bytes each
        codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # chunk j: sub-block 2j (low), 2j + 1 (high)
        scales = d[..., None] * sc.astype(np.float32)
        offsets = -(dmin[..., None] * mn.astype(np.float32))
        return 4, 32, _pack4(codes.reshape(rows, cols)), scales.reshape(rows, -1), offsets.reshape(rows, -1)
    # Q6_K: two halves of 128 elements; in each, element l (l < 32) of the four 32-element runs
    # takes the low / high nibble of ql[l] / ql[l + 32] and two bits of qh[l].
    ql, qh = blocks[..., 0:128], blocks[..., 128:192]
    sc = blocks[..., 192:208].view(np.int8).astype(np.float32)
    d = _halves(blocks[..., 208:210])
    out = []
    for half in range(2):
        low, high = ql[..., 64 * half:64 * half + 64], qh[..., 32 * half:32 * half + 32]
        out += [(low[..., :32] & 0x0F) | ((high & 3) << 4), (low[..., 32:] & 0x0F) | (((high >> 2) & 3) << 4),
                (low[..., :32] >> 4) | (((high >> 4) & 3) << 4), (low[..., 32:] >> 4) | (((high >> 6) & 3) << 4)]
    codes = np.concatenate(out, axis=-1).astype(np.int16) - 32
    return 8, 16, codes.astype(np.int8).reshape(rows, cols), (d[..., None] * sc).reshape(rows, -1), None


def dequantize(bits: int, group: int, qweight: np.ndarray, scales: np.ndarray, offsets) -> np.ndarray:
    """The float32 weight a repacked tensor holds (the same arithmetic as the C++ side)."""
    q = qweight.astype(np.float32) if bits == 8 else \
        np.stack([qweight & 0x0F, qweight >> 4], axis=-1).reshape(qweight.shape[0], -1).astype(np.float32)
    rows, cols = q.shape
    w = q.reshape(rows, cols // group, group) * scales[..., None]
    if offsets is not None:
        w = w + offsets[..., None]
    return w.reshape(rows, cols).astype(np.float32)
