"""The fused Triton kernel of :func:`novum3d.model.matching.class_scores` (CUDA; CPU under TRITON_INTERPRET=1).

Each program holds a tile of pixel features [BLOCK_P, D] (bf16) and streams the Gaussians of a
run of classes through ``tl.dot`` in [D, BLOCK_K] tiles (fp32 accumulation), keeping a running
max per pixel; at the end of each class it takes ``max(obj, bg)`` and sums over the tile's
masked pixels. The bank max ``bg`` comes from a first pass of the same kernel (the bank is one
"class" of M vectors). Per-tile sums go to a small [B, slots, Y] buffer that torch sums
afterwards, so the result is deterministic (no atomics). :func:`~novum3d.model.matching.class_scores_torch`
is its reference; tests compare the two.

On an H100 (B=64, 80x100 maps, bf16): 12 classes x ~1100 Gaussians + a 2560-vector bank run at
~15,900 img/s (513 useful TFLOP/s; the torch path: 1,368 img/s), 1000 classes x 1100 at 266 img/s
(602 TFLOP/s). ``benchmarks/inference.py`` measures it.

The Gaussians are packed once (and cached while the tensors are unchanged) as [Y, Kpad, Dpad]
bf16: each class's valid vectors first, then copies of its first valid vector up to Kpad (a
multiple of the largest BLOCK_K). A copy cannot change a max, so the kernel's inner loop needs no
mask. D is zero-padded to a power of two >= 16, which adds nothing to the products, so any D up
to 256 runs on the kernel; larger D falls back to torch.
"""

from __future__ import annotations

import math
import os
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
    triton = None

__all__ = ["KernelConfig", "class_scores_triton", "pack_vectors", "triton_applies", "triton_available"]

MAX_TRITON_DIM = 256
PACK_MULTIPLE = 128  # Kpad is a multiple of this; every autotuned BLOCK_K divides it
CLASSES_PER_PROGRAM = 16  # cap: a class tile (16 x 1152 x 128 bf16 = 4.7 MB) stays in L2 while programs share it


def triton_available() -> bool:
    """Whether the Triton kernel can run here: triton imports and there is a GPU or the interpreter is on."""
    return triton is not None and (torch.cuda.is_available() or _interpreting())


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def triton_applies(feature_maps: Tensor) -> bool:
    """Whether :func:`class_scores` takes the kernel for these maps: CUDA, D <= 256, no gradient wanted."""
    return (
        triton is not None
        and feature_maps.is_cuda
        and feature_maps.shape[1] <= MAX_TRITON_DIM
        and not (torch.is_grad_enabled() and feature_maps.requires_grad)  # the kernel has no backward
    )


# ---------------------------------------------------------------------------------------------
# Packing


@dataclass(frozen=True)
class PackedVectors:
    """Y groups of vectors as one contiguous [Y, kpad, dpad] bf16 tensor, ready for the kernel."""

    data: Tensor  # [Y, kpad, dpad] bf16; padding rows repeat the group's first valid vector, padding dims are 0
    counts: Tensor  # [Y] int64 valid vectors per group
    empty: list[int]  # groups with no valid vector (their rows are meaningless)


def pack_vectors(vectors: Tensor, valid: Tensor, multiple: int = PACK_MULTIPLE) -> PackedVectors:
    """Pack [Y, K, D] vectors with a [Y, K] valid mask (any pattern, not only a prefix) for the kernel."""
    Y, K, D = vectors.shape
    dpad = _dim_block(D)
    counts = valid.sum(1)
    kmax = int(counts.max()) if Y > 0 else 0
    kpad = max(1, math.ceil(kmax / multiple)) * multiple
    if K == 0:
        return PackedVectors(vectors.new_zeros(Y, kpad, dpad, dtype=torch.bfloat16), counts, list(range(Y)))
    order = torch.argsort((~valid).to(torch.uint8), dim=1, stable=True)  # valid slots first, in order
    j = torch.arange(kpad, device=vectors.device)[None, :]
    j = torch.where(j < counts[:, None], j, 0).clamp(max=K - 1)  # past the count: the first valid one
    idx = order.gather(1, j)  # [Y, kpad]
    data = vectors.gather(1, idx[..., None].expand(Y, kpad, D)).to(torch.bfloat16)
    if dpad > D:
        data = F.pad(data, (0, dpad - D))
    empty = torch.nonzero(counts == 0)[:, 0].tolist()
    return PackedVectors(data.contiguous(), counts, empty)


def _dim_block(D: int) -> int:
    return max(16, triton.next_power_of_2(D) if triton is not None else 1 << max(0, D - 1).bit_length())


def _pack_bank(bank: Tensor, multiple: int, dpad: int) -> Tensor:
    """The bank [M, D] as one group [1, Mpad, dpad] bf16 (padding repeats bank[0]); no host sync."""
    M, D = bank.shape
    mpad = math.ceil(M / multiple) * multiple
    rows = torch.cat([bank, bank[:1].expand(mpad - M, D)]) if mpad > M else bank
    return F.pad(rows.to(torch.bfloat16), (0, dpad - D)).unsqueeze(0).contiguous()


_PACK_CACHE: dict[tuple, tuple] = {}


def _version(t: Tensor) -> int | None:
    try:
        return t._version
    except RuntimeError:  # inference tensors have no version counter
        return None


def _packed_volumes(volume_features: Tensor, valid: Tensor, multiple: int) -> PackedVectors:
    """``pack_vectors`` cached while ``volume_features`` and ``valid`` are the same, unmodified tensors.

    The entry holds weak references, so a freed tensor whose memory is reused never hits; an
    in-place update (momentum, ``load_state_dict``) bumps the version counter and repacks.
    """
    versions = (_version(volume_features), _version(valid))
    key = (id(volume_features), id(valid), multiple)
    hit = _PACK_CACHE.get(key)
    if hit is not None:
        ref_v, ref_m, vers, packed = hit
        if ref_v() is volume_features and ref_m() is valid and vers == versions and None not in vers:
            return packed
    packed = pack_vectors(volume_features, valid, multiple)
    if None not in versions:
        if len(_PACK_CACHE) >= 4:
            _PACK_CACHE.pop(next(iter(_PACK_CACHE)))

        def drop(_ref, key=key):  # the packed copy goes when either source tensor does
            _PACK_CACHE.pop(key, None)

        _PACK_CACHE[key] = (weakref.ref(volume_features, drop), weakref.ref(valid, drop), versions, packed)
    return packed


# ---------------------------------------------------------------------------------------------
# The kernel

if triton is not None:

    @triton.jit
    def _match_kernel(
        feat_ptr,  # [B, P, BLOCK_D] bf16 contiguous (zero-padded dims)
        vec_ptr,  # [Y, KPAD, BLOCK_D] bf16 contiguous (see PackedVectors)
        bg_ptr,  # [B, P] fp32: written by the bank pass, read by the class pass
        mask_ptr,  # [B, P] uint8 pixel mask (HAS_MASK)
        out_ptr,  # [B, n_slots, Y] fp32 sums over SLOT_P-pixel slots (class pass)
        P,
        Y,
        n_slots,
        classes_per_program,
        SLOT_P: tl.constexpr,
        KPAD: tl.constexpr,
        BLOCK_D: tl.constexpr,
        BLOCK_P: tl.constexpr,
        BLOCK_K: tl.constexpr,
        BANK_PASS: tl.constexpr,
        HAS_BG: tl.constexpr,
        HAS_MASK: tl.constexpr,
        UPCAST: tl.constexpr,
    ):
        """One program: BLOCK_P pixels of one image against ``classes_per_program`` classes.

        Class pass: out[b, tile, y] = sum over the tile's kept pixels of max(max_k f.C_yk, bg).
        Bank pass (one "class", the bank): bg[b, p] = max_m f.bank_m.
        """
        pid = tl.program_id(0)  # pixel tile, fastest: concurrent programs share a class tile in L2
        n_pt = tl.cdiv(P, BLOCK_P)
        b = pid // n_pt
        pt = pid % n_pt
        y0 = tl.program_id(1) * classes_per_program
        offs_p = pt * BLOCK_P + tl.arange(0, BLOCK_P)
        offs_d = tl.arange(0, BLOCK_D)
        in_p = offs_p < P
        row = b.to(tl.int64) * P + offs_p
        f = tl.load(feat_ptr + row[:, None] * BLOCK_D + offs_d[None, :], mask=in_p[:, None], other=0.0)
        if UPCAST:  # the interpreter multiplies bf16 as raw bits: the same (exact) values in fp32
            f = f.to(tl.float32)

        if not BANK_PASS:
            keep = in_p
            if HAS_MASK:
                keep = keep & (tl.load(mask_ptr + row, mask=in_p, other=0) != 0)
            if HAS_BG:
                bg = tl.load(bg_ptr + row, mask=in_p, other=0.0)
            # A program covers R slots of SLOT_P pixels (SLOT_P = the smallest BLOCK_P tried) and
            # writes all of them (its sum in the first, zeros in the rest): every slot is written
            # whichever config the autotuner picks, so no stale sums from trial runs survive.
            R: tl.constexpr = BLOCK_P // SLOT_P
            slots = pt * R + tl.arange(0, R)
            out_slots = out_ptr + (b.to(tl.int64) * n_slots + slots) * Y + y0
            first = tl.arange(0, R) == 0
            slot_ok = slots < n_slots

        NK: tl.constexpr = KPAD // BLOCK_K
        n_cls = tl.minimum(classes_per_program, Y - y0)
        offs_k = tl.arange(0, BLOCK_K)
        v_ptrs = vec_ptr + y0.to(tl.int64) * (KPAD * BLOCK_D) + offs_k[None, :] * BLOCK_D + offs_d[:, None]
        best = tl.full([BLOCK_P], float("-inf"), tl.float32)
        # One flat loop over the program's classes' tiles (contiguous in memory), so the loads
        # pipeline across class boundaries; the per-class epilogue runs on each class's last tile.
        for t in range(0, n_cls * NK):
            c = tl.load(v_ptrs)  # [BLOCK_D, BLOCK_K]; packed, so no mask
            scores = tl.dot(f, c.to(tl.float32)) if UPCAST else tl.dot(f, c)  # [BLOCK_P, BLOCK_K] fp32
            best = tl.maximum(best, tl.max(scores, axis=1))
            v_ptrs += BLOCK_K * BLOCK_D
            if t % NK == NK - 1:
                if BANK_PASS:
                    tl.store(bg_ptr + row, best, mask=in_p)
                else:
                    pixel = best
                    if HAS_BG:
                        pixel = tl.maximum(pixel, bg)
                    total = tl.sum(tl.where(keep, pixel, 0.0), axis=0)
                    tl.store(out_slots + t // NK, tl.where(first, total, 0.0), mask=slot_ok)
                best = tl.full([BLOCK_P], float("-inf"), tl.float32)

    # (BLOCK_P, BLOCK_K, num_warps, num_stages): each compiles for sm_90a without register spills
    # (checked with ptxas -v). Two warpgroups per SM (8 warps, or two 4-warp programs when shared
    # memory allows) let one group's max reductions overlap the other's tensor-core products.
    # The five fastest of 13 shapes timed on an H100 (B=64, 80x100, 12 x ~1100 Gaussians + 2560
    # bank): 488-521 useful TFLOP/s; slower there: (128, 128, 8, 3|4), (128, 128, 4, 3),
    # (256, 64, 8, 4), (64, 64, 4, 3|4), (128, 32, 4, 4) at 391-463. At 1000 classes (B=16):
    # (256, 128, 8, 3) 607, (128, 64, 4, 3) 571, (64, 128, 4, 3) 481.
    TUNE_SHAPES = (
        (256, 128, 8, 3),
        (256, 64, 8, 3),
        (128, 64, 4, 3),
        (128, 64, 4, 4),
        (64, 128, 4, 3),
    )
    _CONFIGS = [triton.Config({"BLOCK_P": p, "BLOCK_K": k}, num_warps=w, num_stages=s) for p, k, w, s in TUNE_SHAPES]
    _KEY = ["KPAD", "BLOCK_D", "Y", "P", "HAS_MASK"]
    _match_tuned = triton.autotune(configs=_CONFIGS, key=_KEY)(_match_kernel)
    _bank_tuned = triton.autotune(configs=_CONFIGS, key=_KEY)(_match_kernel)


@dataclass(frozen=True)
class KernelConfig:
    """Fixed launch settings (the interpreter and tests); on CUDA the default is to autotune."""

    block_p: int = 16
    block_k: int = 16
    num_warps: int = 4
    num_stages: int = 2
    classes_per_program: int | None = None
    slot_p: int | None = None  # pixels per partial sum (default block_p; block_p must be a multiple)


def class_scores_triton(
    feature_maps: Tensor,
    volume_features: Tensor,
    valid: Tensor,
    bank: Tensor,
    pixel_mask: Tensor | None = None,
    config: KernelConfig | None = None,
) -> Tensor:
    """The fused kernel (CUDA, or CPU under ``TRITON_INTERPRET=1``); arguments as
    :func:`~novum3d.model.matching.class_scores`.

    Args:
        config: fixed block sizes instead of autotuning (the default under the interpreter).

    Numerics: features and Gaussians are rounded to bf16, products accumulate in fp32 (the torch
    path on CUDA also rounds each product to bf16). A class with no valid Gaussian scores the
    bank's mean max (``-inf`` without a bank); an image with no selected pixel scores 0.
    """
    if triton is None:
        raise RuntimeError("class_scores_triton: triton is not installed")
    if not (feature_maps.is_cuda or _interpreting()):
        raise RuntimeError("class_scores_triton: needs CUDA tensors (or TRITON_INTERPRET=1 for the CPU interpreter)")
    B, D, h, w = feature_maps.shape
    Y, _, Dv = volume_features.shape
    if Dv != D or bank.shape[-1] != D:
        raise ValueError(f"feature dims differ: maps {D}, volumes {Dv}, bank {bank.shape[-1]}")
    if D > MAX_TRITON_DIM:
        raise ValueError(f"class_scores_triton: D={D} > {MAX_TRITON_DIM}; use backend='torch'")
    P, M, device = h * w, bank.shape[0], feature_maps.device
    if config is None and _interpreting():
        config = KernelConfig()
    multiple = PACK_MULTIPLE if config is None else config.block_k
    if B == 0 or Y == 0 or P == 0:
        return torch.zeros(B, Y, device=device)

    feats = _features_bf16(feature_maps)  # [B, P, dpad]
    if pixel_mask is not None:
        mask = pixel_mask.reshape(B, P).to(device=device, dtype=torch.bool).contiguous()
        mask_u8 = mask.view(torch.uint8)
    else:
        mask, mask_u8 = None, feats  # unused pointer
    packed = _packed_volumes(volume_features.to(device), valid.to(device), multiple)
    kpad, dpad = packed.data.shape[1], packed.data.shape[2]
    if config is None:
        slot_p = min(c.kwargs["BLOCK_P"] for c in _CONFIGS)
    else:
        slot_p = config.slot_p or config.block_p
    n_slots = triton.cdiv(P, slot_p)
    per_prog = _classes_per_program(Y, B * triton.cdiv(P, 128), device, config)

    bg = torch.empty(B, P, device=device, dtype=torch.float32)
    if M > 0:
        bank_packed = _pack_bank(bank.to(device), multiple, dpad)
        args = (feats, bank_packed, bg, mask_u8, bg, P, 1, 0, 1, slot_p)
        consts = {"KPAD": bank_packed.shape[1], "BLOCK_D": dpad, "BANK_PASS": True, "HAS_BG": False}
        _launch(_bank_tuned, args, {**consts, "HAS_MASK": False}, B, P, 1, config)

    out = torch.empty(B, n_slots, Y, device=device, dtype=torch.float32)
    args = (feats, packed.data, bg, mask_u8, out, P, Y, n_slots, per_prog, slot_p)
    consts = {"KPAD": kpad, "BLOCK_D": dpad, "BANK_PASS": False, "HAS_BG": M > 0, "HAS_MASK": mask is not None}
    _launch(_match_tuned, args, consts, B, P, triton.cdiv(Y, per_prog), config)

    total = out.sum(1)
    count = mask.sum(1, keepdim=True) if mask is not None else torch.full((B, 1), P, device=device)
    if packed.empty:  # no Gaussian: obj = -inf, so the score is the bank term alone
        if M == 0:
            empty_score = torch.full((B,), float("-inf"), device=device)
        else:
            empty_score = torch.where(mask, bg, 0.0).sum(1) if mask is not None else bg.sum(1)
        total[:, packed.empty] = empty_score[:, None]
    return total / count.clamp(min=1).float()


def _features_bf16(feature_maps: Tensor) -> Tensor:
    """[B, D, h, w] -> [B, h * w, dpad] bf16 contiguous, dims zero-padded; no copy when it already is."""
    B, D, h, w = feature_maps.shape
    dpad = _dim_block(D)
    pixels = feature_maps.permute(0, 2, 3, 1).reshape(B, h * w, D)  # a view for channels_last maps
    if dpad == D:
        return pixels.to(torch.bfloat16, memory_format=torch.contiguous_format)
    out = pixels.new_zeros(B, h * w, dpad, dtype=torch.bfloat16)
    out[..., :D] = pixels
    return out


def _classes_per_program(Y: int, pixel_programs: int, device: torch.device, config: KernelConfig | None) -> int:
    """Classes per program: at most CLASSES_PER_PROGRAM, fewer when there are too few pixel tiles to fill the GPU."""
    if config is not None and config.classes_per_program is not None:
        return config.classes_per_program
    if device.type != "cuda":
        return min(Y, CLASSES_PER_PROGRAM)
    want = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    class_tiles = max(math.ceil(Y / CLASSES_PER_PROGRAM), math.ceil(want / max(pixel_programs, 1)))
    return math.ceil(Y / min(class_tiles, Y))


def _launch(kernel, args, consts, grid_b, P, y_tiles, config):
    """Launch autotuned (``config`` None) or with fixed block sizes; the pixel-tile count follows BLOCK_P."""
    consts = {**consts, "UPCAST": _interpreting()}
    if config is None:
        kernel[lambda meta: (grid_b * triton.cdiv(P, meta["BLOCK_P"]), y_tiles)](*args, **consts)
        return
    _match_kernel[(grid_b * triton.cdiv(P, config.block_p), y_tiles)](
        *args,
        **consts,
        BLOCK_P=config.block_p,
        BLOCK_K=config.block_k,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
