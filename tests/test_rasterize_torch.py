import math

import pytest
import torch

from benchmarks.common import cuboid_scene
from rendering import rasterize_features, rasterize_gaussians
from rendering.backends.torch_backend import rasterize_torch
from rendering.projection import (
    ALPHA_THRESHOLD,
    MAX_ALPHA,
    TRANSMITTANCE_STOP,
    project_gaussians,
    quat_scale_to_covar,
    tile_bounds,
)
from tests.helpers import random_scene


def brute_force_render(means, quats, scales, opacities, feats, viewmats, Ks, width, height, tile_size=16):
    """gsplat's per-pixel loop, one pixel and one Gaussian at a time (slow, obvious)."""
    proj = project_gaussians(means, quat_scale_to_covar(quats, scales), opacities, viewmats, Ks, width, height)
    rects = tile_bounds(proj.means2d, proj.radii, tile_size, width, height)
    B, N = proj.depths.shape
    out = torch.zeros(B, height, width, feats.shape[-1], dtype=feats.dtype)
    alpha_out = torch.zeros(B, height, width, dtype=feats.dtype)
    for b in range(B):
        order = sorted((k for k in range(N) if (proj.radii[b, k] > 0).all()), key=lambda k: proj.depths[b, k])
        for i in range(height):
            for j in range(width):
                T = 1.0
                for k in order:
                    x0, y0, x1, y1 = rects[b, k].tolist()
                    if not (x0 <= j // tile_size < x1 and y0 <= i // tile_size < y1):
                        continue
                    dx = proj.means2d[b, k, 0] - (j + 0.5)
                    dy = proj.means2d[b, k, 1] - (i + 0.5)
                    a, bb, c = proj.conics[b, k]
                    sigma = 0.5 * (a * dx * dx + c * dy * dy) + bb * dx * dy
                    alpha = min(MAX_ALPHA, (opacities[k] * torch.exp(-sigma)).item())
                    if sigma < 0 or alpha < ALPHA_THRESHOLD:
                        continue
                    if T * (1 - alpha) <= TRANSMITTANCE_STOP:
                        break
                    out[b, i, j] += feats[b, k] * alpha * T
                    T *= 1 - alpha
                alpha_out[b, i, j] = 1 - T
    return out, alpha_out


@pytest.mark.parametrize("layout", ["tiled", "dense"])
def test_matches_brute_force_loop(layout):
    scene = random_scene(n=7, batch=2, d=3)
    ref_f, ref_a = brute_force_render(*scene)
    out = rasterize_gaussians(*scene, backend="torch", torch_layout=layout)
    assert out.features.shape == (2, 10, 12, 3)
    torch.testing.assert_close(out.features, ref_f, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(out.alpha, ref_a, atol=1e-10, rtol=1e-8)
    assert out.alpha.max() > 0.3  # the scene is actually in view


@pytest.mark.parametrize("layout", ["tiled", "dense"])
def test_matches_brute_force_with_saturated_pixels_and_small_tiles(layout):
    means, quats, scales, opacities, feats, viewmats, Ks, w, h = random_scene(n=9, batch=1, d=2, seed=4)
    opacities = torch.full_like(opacities, 1.0)  # 0.999 alphas: pixels hit the 1e-4 stop
    scene = (means, quats, scales * 2, opacities, feats, viewmats, Ks, w, h)
    ref_f, ref_a = brute_force_render(*scene, tile_size=4)
    out = rasterize_gaussians(*scene, backend="torch", tile_size=4, torch_layout=layout)
    torch.testing.assert_close(out.features, ref_f, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(out.alpha, ref_a, atol=1e-10, rtol=1e-8)
    assert out.alpha.max() > 0.999


def test_projection_matches_gsplat_pure_torch_reference():
    gsplat_impl = pytest.importorskip("gsplat.cuda._torch_impl")
    means, quats, scales, opacities, _, viewmats, Ks, w, h = random_scene(n=50, batch=3)
    covars = quat_scale_to_covar(quats, scales)
    ours = project_gaussians(means, covars, opacities, viewmats, Ks, w, h)
    radii, means2d, depths, conics, _ = gsplat_impl._fully_fused_projection(means, covars, viewmats, Ks, w, h)
    torch.testing.assert_close(ours.means2d, means2d)
    torch.testing.assert_close(ours.depths, depths)
    torch.testing.assert_close(ours.conics, conics)
    # Ours also applies gsplat's CUDA opacity-aware extent, so radii can only shrink.
    assert ((ours.radii <= radii) | (radii == 0)).all()


def test_tiled_and_dense_layouts_agree_on_a_cuboid_with_gradients():
    vol, feats, viewmats, Ks, w, h = cuboid_scene(batch=3, d=16, width=50, height=40, dtype=torch.float64)
    viewmats.requires_grad_(True)
    target = torch.randn(3, h, w, 16, dtype=torch.float64)
    results = {}
    for layout in ("tiled", "dense"):
        out = rasterize_features(vol, feats, viewmats, Ks, w, h, backend="torch", torch_layout=layout)
        (grad,) = torch.autograd.grad((out.features * target).sum() + out.depth.sum(), viewmats)
        results[layout] = (out, grad)
    (a, ga), (b, gb) = results["tiled"], results["dense"]
    assert a.alpha.max() > 0.99
    for x, y in zip(a[:3], b[:3], strict=True):
        torch.testing.assert_close(x, y, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(ga, gb, atol=1e-8, rtol=1e-7)


def test_tile_list_lengths_count_rectangles():
    from rendering.backends.torch_backend import tile_list_lengths

    vol, _, viewmats, Ks, w, h = cuboid_scene(batch=3, d=4, width=70, height=45)
    proj = project_gaussians(vol.means, quat_scale_to_covar(vol.quats, vol.scales), vol.opacities, viewmats, Ks, w, h)
    rects = tile_bounds(proj.means2d, proj.radii, 16, w, h)
    counts = tile_list_lengths(proj, w, h, 16)
    assert counts.shape == (3, 3, 5)
    for b in range(3):
        for ty in range(3):
            for tx in range(5):
                r = rects[b]
                inside = (r[:, 0] <= tx) & (tx < r[:, 2]) & (r[:, 1] <= ty) & (ty < r[:, 3])
                assert counts[b, ty, tx] == inside.sum()


def test_gradcheck_features_and_viewmats():
    means, quats, scales, opacities, feats, viewmats, Ks, w, h = random_scene(n=4, batch=2, d=2, width=8, height=6)
    feats = feats.clone().requires_grad_(True)
    viewmats = viewmats.clone().requires_grad_(True)

    def render(f, v):
        out = rasterize_gaussians(means, quats, scales, opacities, f, v, Ks, w, h, backend="torch")
        return out.features, out.alpha, out.depth

    assert torch.autograd.gradcheck(render, (feats, viewmats), eps=1e-6, atol=1e-5)


def test_chunked_backward_recomputes_and_matches_single_chunk():
    vol, feats, viewmats, Ks, w, h = cuboid_scene(batch=3, d=8, width=40, height=32, dtype=torch.float64)
    covars = quat_scale_to_covar(vol.quats, vol.scales)
    grads = []
    for budget in (1 << 30, 1000):  # one chunk, then one view per chunk (checkpointed)
        vm = viewmats.clone().requires_grad_(True)
        f = feats.expand(3, -1, -1).clone().requires_grad_(True)
        proj = project_gaussians(vol.means, covars, vol.opacities, vm, Ks, w, h)
        out = rasterize_torch(proj, vol.opacities, f, w, h, element_budget=budget)
        (out[0].square().sum() + out[2].sum()).backward()
        grads.append((vm.grad, f.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
    assert grads[0][0].abs().max() > 0


def test_gradcheck_means_and_scales():
    means, quats, scales, opacities, feats, viewmats, Ks, w, h = random_scene(n=4, batch=1, d=2, width=8, height=6)
    means = means.clone().requires_grad_(True)
    scales = scales.clone().requires_grad_(True)

    def render(m, s):
        return rasterize_gaussians(m, quats, s, opacities, feats, viewmats, Ks, w, h, backend="torch").features

    assert torch.autograd.gradcheck(render, (means, scales), eps=1e-6, atol=1e-5)


def test_chunking_and_batching_do_not_change_the_result():
    vol, feats, viewmats, Ks, w, h = cuboid_scene(batch=3, d=8, width=40, height=32)
    args = (vol.means, vol.quats, vol.scales, vol.opacities)
    full = rasterize_gaussians(*args, feats, viewmats, Ks, w, h, backend="torch")
    for b in range(3):
        one = rasterize_gaussians(*args, feats, viewmats[b : b + 1], Ks[b : b + 1], w, h, backend="torch")
        torch.testing.assert_close(one.features[0], full.features[b])
    covars = quat_scale_to_covar(vol.quats, vol.scales)
    proj = project_gaussians(vol.means, covars, vol.opacities, viewmats, Ks, w, h)
    for layout in ("tiled", "dense"):
        small = rasterize_torch(proj, vol.opacities, feats.expand(3, -1, -1), w, h, layout=layout, element_budget=1000)
        torch.testing.assert_close(small[0], full.features)


def test_shared_and_per_view_features_agree_and_any_channel_count_works():
    vol, feats, viewmats, Ks, w, h = cuboid_scene(batch=2, d=256, width=24, height=20)
    args = (vol.means, vol.quats, vol.scales, vol.opacities)
    shared = rasterize_gaussians(*args, feats, viewmats, Ks, w, h, backend="torch")
    per_view = rasterize_gaussians(*args, feats.expand(2, -1, -1), viewmats, Ks, w, h, backend="torch")
    torch.testing.assert_close(shared.features, per_view.features)
    assert shared.features.shape == (2, 20, 24, 256)
    one = rasterize_gaussians(*args, feats[:, :1], viewmats, Ks, w, h, backend="torch")
    torch.testing.assert_close(one.features[..., 0], shared.features[..., 0])


def test_cuboid_renders_closed_with_front_surface_depth():
    vol, feats, _, _, w, h = cuboid_scene(batch=1, d=4)
    from rendering import pascal3d_intrinsics, pose_to_viewmat

    vm = pose_to_viewmat(0.0, 0.0, 0.0, 10.0)  # frontal: the y = -0.9 face at depth 9.1
    K = pascal3d_intrinsics(1.0, 3000.0, (400.0, 320.0), downsample=8)
    out = rasterize_features(vol, feats, vm, K, w, h)
    # Face spans x in [-0.4, 0.4], z in [-0.3, 0.3]: 375 px/unit / 10 -> 15 x 11 px around (50, 40).
    inner = out.alpha[0, 37:43, 46:54]
    assert inner.min() > 0.99
    assert abs(out.depth[0, 40, 50].item() - 9.1) < 0.05
    assert out.alpha[0, :10].max() < 1e-6  # far from the object: empty


def test_visibility_front_face_seen_back_face_hidden():
    vol, feats, _, _, w, h = cuboid_scene(batch=1, d=4)
    from rendering import pascal3d_intrinsics, pose_to_viewmat

    vm = pose_to_viewmat(torch.tensor([0.0, math.pi]), 0.0, 0.0, 10.0)
    K = pascal3d_intrinsics(1.0, 3000.0, (400.0, 320.0), downsample=8).expand(2, 3, 3)
    out = rasterize_features(vol, feats, vm, K, w, h, with_visibility=True)
    y = vol.means[:, 1]
    front, back = y < -0.89, y > 0.89
    assert out.visible[0, front].all() and not out.visible[0, back].any()
    assert out.visible[1, back].all() and not out.visible[1, front].any()
    # Projected pixels of visible Gaussians lie inside the image.
    m = out.means2d[out.visible]
    assert ((m >= 0) & (m < torch.tensor([w, h]))).all()


def test_visibility_excludes_gaussians_outside_the_image():
    vol, feats, _, _, w, h = cuboid_scene(batch=1, d=4)
    from rendering import pascal3d_intrinsics, pose_to_viewmat

    vm = pose_to_viewmat(0.0, 0.0, 0.0, 10.0)
    K = pascal3d_intrinsics(1.0, 3000.0, (100.0, 320.0), downsample=8)  # object centred at x=12.5 px
    out = rasterize_features(vol, feats, vm, K, w, h, with_visibility=True)
    assert out.visible.any()
    assert (out.means2d[0, out.visible[0], 0] >= 0).all()
    assert ((out.means2d[0, :, 0] < 0) & out.visible[0]).sum() == 0


def _scene_kwargs():
    vol, feats, viewmats, Ks, w, h = cuboid_scene(batch=2, d=4, width=16, height=16)
    return dict(
        means=vol.means, quats=vol.quats, scales=vol.scales, opacities=vol.opacities,
        features=feats, viewmats=viewmats, Ks=Ks, width=w, height=h,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda k: k.update(means=k["means"][:, :2]), r"means: expected shape \[N, 3\]"),
        (lambda k: k.update(quats=k["quats"][:-1]), r"quats: expected shape \[N, 4\]"),
        (lambda k: k.update(features=k["features"][:-1]), r"features: expected shape \[N, D\]"),
        (lambda k: k.update(features=k["features"][None].expand(3, -1, -1)), "with B=2"),
        (lambda k: k.update(viewmats=k["viewmats"][:, :3]), r"viewmats: expected shape \[B, 4, 4\]"),
        (lambda k: k.update(Ks=k["Ks"][:1]), r"Ks: expected shape \[B, 3, 3\] with B=2"),
        (lambda k: k["viewmats"].__setitem__((0, 0, 3), float("nan")), "viewmats: contains non-finite"),
        (lambda k: k.update(scales=-k["scales"]), "scales: must be > 0"),
        (lambda k: k.update(opacities=k["opacities"] * 2), r"opacities: must lie in \[0, 1\]"),
        (lambda k: k.update(width=0), "width, height"),
        (lambda k: k.update(backend="cuda"), "backend: expected"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(change, match):
    kwargs = _scene_kwargs()
    change(kwargs)
    with pytest.raises(ValueError, match=match):
        rasterize_gaussians(**kwargs)


def test_gsplat_backend_refused_on_cpu():
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        rasterize_gaussians(**_scene_kwargs(), backend="gsplat")


def test_depth_is_optional_and_does_not_change_features():
    kwargs = _scene_kwargs()
    with_depth = rasterize_gaussians(**kwargs)
    without = rasterize_gaussians(**kwargs, with_depth=False)
    assert without.depth is None and with_depth.depth is not None
    torch.testing.assert_close(without.features, with_depth.features)
    torch.testing.assert_close(without.alpha, with_depth.alpha)


def test_project_visible_matches_rasterize_with_visibility():
    from rendering import project_visible

    kwargs = _scene_kwargs()
    out = rasterize_gaussians(**kwargs, with_visibility=True)
    kwargs.pop("features")
    means2d, visible = project_visible(**kwargs)
    torch.testing.assert_close(means2d, out.means2d)
    assert torch.equal(visible, out.visible)


def test_visibility_does_not_depend_on_how_views_are_chunked():
    from rendering import cuboid_volume, pascal3d_intrinsics, pose_to_viewmat
    from rendering.rasterize import _project_torch
    from rendering.visibility import gaussian_visibility

    vol = cuboid_volume((1.0, 0.6, 0.4), n=300)
    vm = pose_to_viewmat(torch.linspace(0, 6, 7), 0.3, 0.0, 5.0)
    K = pascal3d_intrinsics(1.0, 400.0, (32.0, 32.0), downsample=1).expand(7, 3, 3)
    args = (vol.means, vol.quats, vol.scales, vol.opacities, vm, K, 64, 64, 0.01, 0.3, torch.float32)
    proj = _project_torch(*args)
    margin = 2.0 * vol.scales.amax(-1)
    whole = gaussian_visibility(proj, vol.opacities, margin, 64, 64, fused=False)
    chunked = gaussian_visibility(proj, vol.opacities, margin, 64, 64, fused=False, element_budget=len(vol) ** 2 * 2)
    assert torch.equal(whole, chunked)
    assert 0 < int(whole.sum()) < whole.numel()


def test_visibility_falls_back_to_the_reference_where_the_fused_kernel_cannot_be_built(monkeypatch):
    import rendering.visibility as visibility
    from rendering import cuboid_volume, pascal3d_intrinsics, pose_to_viewmat
    from rendering.rasterize import _project_torch

    def no_compiler():
        def fail(*args):
            raise RuntimeError("no C compiler")

        return fail

    monkeypatch.setattr(visibility, "_fused_log_transmittance", no_compiler)
    monkeypatch.setattr(visibility, "_FUSED_FAILED", [])
    vol = cuboid_volume((1.0, 0.6, 0.4), n=200)
    vm = pose_to_viewmat(torch.linspace(0, 6, 3), 0.3, 0.0, 5.0)
    K = pascal3d_intrinsics(1.0, 400.0, (32.0, 32.0), downsample=1).expand(3, 3, 3)
    proj = _project_torch(vol.means, vol.quats, vol.scales, vol.opacities, vm, K, 64, 64, 0.01, 0.3, torch.float32)
    margin = 2.0 * vol.scales.amax(-1)
    reference = visibility.gaussian_visibility(proj, vol.opacities, margin, 64, 64, fused=False)
    with pytest.warns(RuntimeWarning, match="fused visibility kernel could not be built"):
        fallback = visibility.gaussian_visibility(proj, vol.opacities, margin, 64, 64, fused=True)
    assert torch.equal(fallback, reference)
    assert visibility._FUSED_FAILED == ["RuntimeError: no C compiler"]
    # Later calls go straight to the reference, without another attempt or warning.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(visibility.gaussian_visibility(proj, vol.opacities, margin, 64, 64, fused=True), reference)
