"""The fused Triton matching kernel against the torch reference.

The kernel cases run on CUDA (``gpu``) and, without a GPU, on the CPU under Triton's interpreter
in a subprocess: ``TRITON_INTERPRET=1`` must be set before ``@triton.jit`` runs, i.e. before
novum3d is imported, which this process has already done.

Tolerance: the kernel rounds features and Gaussians to bf16 and accumulates in fp32, so against
the fp32 reference on the same bf16-rounded inputs it agrees to summation order (atol 1e-4);
against unrounded fp32 inputs, bf16 input rounding moves each dot product by at most about
2 * 2^-9 (atol 1e-2); against the torch CUDA path, which also rounds every product to bf16, by
half a bf16 ulp of the scores (atol 5e-3).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from novum3d.model import matching, matching_triton
from novum3d.model.matching import class_scores, class_scores_torch
from novum3d.model.matching_triton import KernelConfig, class_scores_triton

ROOT = Path(__file__).resolve().parents[1]
STRICT, LOOSE, VS_CUDA_TORCH = 1e-4, 1e-2, 5e-3


def unit(*shape, g, dim=-1):
    return F.normalize(torch.randn(*shape, generator=g), dim=dim)


def make(B=2, D=32, hw=(5, 7), counts=(20, 5, 13), M=9, mask="random", seed=0, K=None):
    """Random unit maps [B, D, h, w], volumes [Y, K, D] with per-class counts (prefix), bank [M, D], mask."""
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    K = K or max(max(counts), 1)
    maps = unit(B, D, h, w, g=g, dim=1)
    C = unit(len(counts), K, D, g=g)
    valid = torch.arange(K)[None] < torch.tensor(counts)[:, None]
    bank = unit(M, D, g=g)
    if mask == "random":
        pm = torch.rand(B, h, w, generator=g) > 0.3
    elif mask == "one_empty":
        pm = torch.rand(B, h, w, generator=g) > 0.5
        pm[0] = False
    else:
        pm = None
    return maps, C, valid, bank, pm


def case_inputs(name):
    """(maps, C, valid, bank, mask, KernelConfig) of one named case."""
    cfg = KernelConfig()
    if name == "basic":
        return (*make(), cfg)
    if name == "no_mask_single":
        return (*make(B=1, D=16, hw=(3, 3), counts=(1,), M=1, mask=None), cfg)
    if name == "mask_all_false_one_image":
        return (*make(B=3, mask="one_empty", seed=1), cfg)
    if name == "empty_bank":
        return (*make(M=0, seed=2), cfg)
    if name == "empty_bank_all_false":
        return (*make(M=0, mask="one_empty", seed=3), cfg)
    if name in ("d20", "d3", "d48"):
        return (*make(D=int(name[1:]), seed=4), cfg)
    if name == "many_tiles":  # several pixel tiles (P = 99, not a multiple), classes over 3 programs
        return (*make(B=2, hw=(9, 11), counts=(70, 33, 64, 17, 1), M=40, seed=5), KernelConfig(32, 16, 4, 2, 2))
    if name == "slots":  # a program writes 4 partial-sum slots of 8 pixels, the last ones past P
        return (*make(B=2, hw=(7, 9), counts=(20, 9), M=5, seed=10), KernelConfig(32, 16, 4, 2, slot_p=8))
    if name == "block_k_32":
        return (*make(hw=(6, 6), counts=(40, 31, 64), M=70, seed=6), KernelConfig(16, 32, 4, 3, 3))
    if name == "padded_garbage":  # invalid slots hold the pixels' own features: they must not count
        maps, C, valid, bank, pm = make(counts=(20, 5, 13), seed=7)
        pix = maps.flatten(2).transpose(1, 2).reshape(-1, maps.shape[1])
        C[1, 5:] = pix[: C.shape[1] - 5]
        valid[2] = torch.tensor([i % 3 == 0 for i in range(C.shape[1])])  # not a prefix
        return maps, C, valid, bank, pm, cfg
    if name == "ties":  # Gaussians equal to bank vectors and to pixels, duplicated within and across classes
        maps, C, valid, bank, pm = make(counts=(20, 20, 20), M=6, seed=8)
        pix = maps.flatten(2).transpose(1, 2).reshape(-1, maps.shape[1])
        C[0, :6] = bank
        C[1, :10] = pix[:10]
        C[1, 10:20] = pix[:10]
        C[2, :10] = pix[:10]
        bank[0] = pix[3]
        return maps, C, valid, bank, pm, cfg
    if name == "empty_class":
        maps, C, valid, bank, pm = make(counts=(20, 0, 13), seed=9)
        return maps, C, valid, bank, pm, cfg
    raise KeyError(name)


CASES = [
    "basic",
    "no_mask_single",
    "mask_all_false_one_image",
    "empty_bank",
    "empty_bank_all_false",
    "d20",
    "d3",
    "d48",
    "many_tiles",
    "slots",
    "block_k_32",
    "padded_garbage",
    "ties",
    "empty_class",
]


def _bf16(t):
    return t.to(torch.bfloat16).float()


def check_case(name: str, device: str) -> None:
    maps, C, valid, bank, pm, cfg = case_inputs(name)
    dev = torch.device(device)
    got = class_scores_triton(
        maps.to(dev), C.to(dev), valid.to(dev), bank.to(dev), None if pm is None else pm.to(dev), config=cfg
    ).cpu()
    ref = class_scores_torch(_bf16(maps), _bf16(C), valid, _bf16(bank), pm)  # CPU: fp32 products
    if name == "empty_bank_all_false":
        # obj = -inf nowhere (no empty class), so the unselected image scores 0 in both.
        assert (got[0] == 0).all()
    torch.testing.assert_close(got, ref, atol=STRICT, rtol=0, msg=lambda m: f"{name}: {m}")
    loose = class_scores_torch(maps, C, valid, bank, pm)
    torch.testing.assert_close(got, loose, atol=LOOSE, rtol=0, msg=lambda m: f"{name} (fp32 inputs): {m}")
    if pm is not None and (~pm.flatten(1)).all(1).any():
        assert (got[(~pm.flatten(1)).all(1)] == 0).all(), f"{name}: an image without pixels must score 0"


def check_autotuned_realistic(device: str) -> None:
    """The autotuned launch at the benchmark's scale: 12 classes of ~1100 Gaussians, 2560-vector bank, 80x100."""
    g = torch.Generator().manual_seed(11)
    counts = torch.tensor([1126, 1112, 1094, 1100, 1098, 1090, 1106, 1106, 1090, 1082, 1094, 1092])
    C = unit(12, 1126, 128, g=g)
    valid = torch.arange(1126)[None] < counts[:, None]
    maps, bank = unit(2, 128, 80, 100, g=g, dim=1), unit(2560, 128, g=g)
    pm = torch.rand(2, 80, 100, generator=g) > 0.5
    dev = torch.device(device)
    for mask in (None, pm):
        got = class_scores_triton(
            maps.to(dev), C.to(dev), valid.to(dev), bank.to(dev), None if mask is None else mask.to(dev)
        ).cpu()
        ref = class_scores_torch(_bf16(maps), _bf16(C), valid, _bf16(bank), mask)
        torch.testing.assert_close(got, ref, atol=STRICT, rtol=0)
        cuda_torch = class_scores_torch(
            maps.to(dev), C.to(dev), valid.to(dev), bank.to(dev), None if mask is None else mask.to(dev)
        ).cpu()
        torch.testing.assert_close(got, cuda_torch, atol=VS_CUDA_TORCH, rtol=0)


def check_cache_follows_updates(device: str) -> None:
    """The packed Gaussians are cached per tensor; an in-place update (momentum) must repack."""
    maps, C, valid, bank, pm, cfg = case_inputs("basic")
    dev = torch.device(device)
    maps, C, valid, bank, pm = (t.to(dev) for t in (maps, C, valid, bank, pm))
    first = class_scores_triton(maps, C, valid, bank, pm, config=cfg)
    C[0] = C[0].flip(0)  # in place, bumps the version counter
    C[1, :5] = maps[0, :, 0, :5].T  # pixels of image 0 become Gaussians of class 1
    second = class_scores_triton(maps, C, valid, bank, pm, config=cfg).cpu()
    ref = class_scores_torch(_bf16(maps.cpu()), _bf16(C.cpu()), valid.cpu(), _bf16(bank.cpu()), pm.cpu())
    torch.testing.assert_close(second, ref, atol=STRICT, rtol=0)
    assert not torch.equal(first.cpu(), second)


def run_cases(device: str) -> None:
    for name in CASES:
        check_case(name, device)
    check_cache_follows_updates(device)


# --- CPU ------------------------------------------------------------------------------------


def test_background_scores_max_mean_and_none():
    g = torch.Generator().manual_seed(3)
    maps = F.normalize(torch.randn(2, 8, 5, 6, generator=g), dim=1)
    bank = F.normalize(torch.randn(10, 8, generator=g), dim=1)
    per_vector = torch.einsum("bdhw,md->bmhw", maps, bank)
    torch.testing.assert_close(matching.background_scores(maps, bank), per_vector.amax(1))
    # The authors' pose background with use_clutter: true: one vector, the bank's normalised mean.
    mean = F.normalize(bank.sum(0), dim=0)
    torch.testing.assert_close(matching.background_scores(maps, bank, "mean"), torch.einsum("bdhw,d->bhw", maps, mean))
    # Their default: no background; -1 leaves every object score (rendered . unit feature >= -1) as it is.
    none = matching.background_scores(maps, bank, "none")
    obj = torch.rand(2, 5, 6, generator=g) * 2 - 1
    torch.testing.assert_close(matching.object_or_background(obj, none), obj)
    for reduce in matching.BACKGROUND_REDUCTIONS:
        empty = matching.background_scores(maps, bank[:0], reduce)
        assert empty.shape == (2, 5, 6) and bool((empty == -1).all())
    with pytest.raises(ValueError, match="reduce"):
        matching.background_scores(maps, bank, "median")


def test_object_or_background_softens_the_max_at_a_temperature():
    g = torch.Generator().manual_seed(4)
    obj, bg = torch.rand(50, 3, generator=g) * 2 - 1, torch.rand(50, 1, generator=g) * 2 - 1
    hard = matching.object_or_background(obj, bg)
    torch.testing.assert_close(hard, torch.maximum(obj, bg))
    soft = matching.object_or_background(obj, bg, temperature=0.07)
    assert soft.shape == hard.shape
    assert bool((soft >= hard).all()) and bool((soft <= hard + 0.07 * math.log(2) + 1e-6).all())
    torch.testing.assert_close(matching.object_or_background(obj, bg, temperature=1e-4), hard, atol=1e-4, rtol=0)
    # Object scores just under the background still count, with a gradient.
    o = torch.tensor([0.70], requires_grad=True)
    matching.object_or_background(o, torch.tensor([0.72]), temperature=0.07).sum().backward()
    assert 0.3 < float(o.grad) < 0.5


def test_auto_picks_torch_on_cpu(monkeypatch):
    maps, C, valid, bank, pm, _ = case_inputs("basic")

    def refuse(*args, **kwargs):
        raise AssertionError("the Triton path ran on CPU tensors")

    monkeypatch.setattr(matching, "class_scores_triton", refuse)
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # even with the interpreter on, auto stays on torch for CPU
    got = class_scores(maps, C, valid, bank, pm)
    torch.testing.assert_close(got, class_scores_torch(maps, C, valid, bank, pm), atol=0, rtol=0)
    with pytest.raises(ValueError, match="backend"):
        class_scores(maps, C, valid, bank, pm, backend="cuda")


def test_the_model_scores_with_the_same_function():
    from novum3d.model import novum

    assert novum.class_scores is matching.class_scores


def test_triton_refuses_cpu_tensors_without_interpreter(monkeypatch):
    if matching_triton.triton is None:
        pytest.skip("triton not installed")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    maps, C, valid, bank, pm, _ = case_inputs("basic")
    with pytest.raises(RuntimeError, match="CUDA"):
        class_scores_triton(maps, C, valid, bank, pm)


def test_pack_vectors_puts_valid_first_and_repeats_the_first():
    C = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    valid = torch.tensor([[False, True, False, True], [False, False, False, False]])
    packed = matching_triton.pack_vectors(C, valid, multiple=16)
    assert packed.data.shape == (2, 16, 16) and packed.data.dtype == torch.bfloat16
    assert packed.counts.tolist() == [2, 0] and packed.empty == [1]
    d = packed.data.float()
    assert torch.equal(d[0, 0, :3], C[0, 1]) and torch.equal(d[0, 1, :3], C[0, 3])
    assert torch.equal(d[0, 2:, :3], C[0, 1].expand(14, 3)) and (d[..., 3:] == 0).all()


def test_pack_cache_repacks_after_in_place_updates_and_forgets_freed_tensors():
    g = torch.Generator().manual_seed(0)
    C, valid = unit(2, 5, 4, g=g), torch.ones(2, 5, dtype=torch.bool)
    first = matching_triton._packed_volumes(C, valid, 16)
    assert matching_triton._packed_volumes(C, valid, 16) is first
    C[0, 0] = -C[0, 0]  # in place, as momentum_update does
    second = matching_triton._packed_volumes(C, valid, 16)
    assert second is not first and torch.equal(second.data[0, 0, :4], C[0, 0].to(torch.bfloat16))
    key = (id(C), id(valid), 16)
    assert key in matching_triton._PACK_CACHE
    del C
    assert key not in matching_triton._PACK_CACHE


def interpreter_takes_runtime_loop_bounds() -> bool:
    """Triton 3.6's interpreter turns a runtime loop bound into a 1-element array that numpy >= 2.5
    refuses to convert to an int (3.8 squeezes it); such a pair cannot interpret the kernel."""
    import triton
    import triton.language as tl

    @triton.jit
    def probe(x_ptr, n):
        for i in range(0, n):
            tl.store(x_ptr + i, i)

    x = torch.zeros(3)
    try:
        probe[(1,)](x, 3)
    except Exception:
        return False
    return torch.equal(x, torch.arange(3.0))


@pytest.mark.skipif(matching_triton.triton is None, reason="triton not installed")
def test_triton_kernel_under_interpreter_on_cpu():
    """All kernel cases on the CPU through TRITON_INTERPRET=1, in a fresh process."""
    code = (
        "import sys; sys.path.insert(0, 'tests'); import test_matching as t\n"
        "if not t.interpreter_takes_runtime_loop_bounds(): print('unsupported')\n"
        "else: t.run_cases('cpu'); print('ok')"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if r.returncode == 0 and r.stdout.strip().endswith("unsupported"):
        import numpy
        import triton

        pytest.skip(f"triton {triton.__version__}'s interpreter with numpy {numpy.__version__}: no runtime loop bounds")
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout[-3000:] + r.stderr[-6000:]


def test_every_autotune_config_compiles_for_hopper(tmp_path):
    """Each autotuned shape compiles for sm_90a (ptxas included) without spilling registers, no GPU needed."""
    pytest.importorskip("triton")
    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError:
        pytest.skip("this triton has no ASTSource/GPUTarget")
    import triton

    if _interpreting_here():
        pytest.skip("the kernel is an interpreted function in this process")
    try:
        ptxas = triton.knobs.nvidia.ptxas.path
    except Exception as exc:  # no bundled ptxas
        pytest.skip(f"no ptxas: {exc}")
    names = list(matching_triton._match_kernel.arg_names)
    pointers = {"feat_ptr": "*bf16", "vec_ptr": "*bf16", "bg_ptr": "*fp32", "mask_ptr": "*u8", "out_ptr": "*fp32"}
    for p, k, w, s in matching_triton.TUNE_SHAPES:
        for bank in (False, True):
            const = {"SLOT_P": 64, "KPAD": 1152, "BLOCK_D": 128, "BLOCK_P": p, "BLOCK_K": k, "BANK_PASS": bank}
            const |= {"HAS_BG": not bank, "HAS_MASK": True, "UPCAST": False}
            sig = {n: pointers.get(n, "constexpr" if n in const else "i32") for n in names}
            attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in pointers}
            src = ASTSource(
                matching_triton._match_kernel,
                sig,
                constexprs={(names.index(n),): v for n, v in const.items()},
                attrs=attrs,
            )
            compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": w, "num_stages": s})
            ttgir = compiled.asm["ttgir"]
            assert "warp_group_dot" in ttgir, (p, k, w, s)  # Hopper wgmma
            assert ttgir.count("async_copy_global_to_local") >= 2, (p, k, w, s)  # Gaussian tiles pipelined
            assert compiled.metadata.shared <= 227 * 1024
            ptx = tmp_path / "k.ptx"
            ptx.write_text(compiled.asm["ptx"])
            r = subprocess.run(
                [ptxas, "-arch=sm_90a", "-v", str(ptx), "-o", os.devnull], capture_output=True, text=True
            )
            assert r.returncode == 0 and " 0 bytes spill stores" in r.stderr, ((p, k, w, s), r.stderr)


def _interpreting_here() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# --- CUDA -----------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("name", CASES)
def test_triton_matches_torch_cuda(name):
    check_case(name, "cuda")


@pytest.mark.gpu
def test_triton_autotuned_matches_torch_cuda():
    check_autotuned_realistic("cuda")
    check_cache_follows_updates("cuda")


@pytest.mark.gpu
def test_auto_picks_triton_on_cuda(monkeypatch):
    maps, C, valid, bank, pm, _ = case_inputs("basic")
    calls = []
    real = matching.class_scores_triton
    monkeypatch.setattr(matching, "class_scores_triton", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = class_scores(*(t.cuda() for t in (maps, C, valid, bank, pm)))
    assert calls and out.shape == (2, 3)
