import dataclasses
import functools
import math

import pytest
import torch
import torch.nn.functional as F

from novum3d.inference.pose import (
    PoseConfig,
    PoseEstimator,
    SearchGrid,
    best_matches,
    canonical_pose,
    count_inliers,
    distance_bounds,
    flip_index,
    principal_offsets,
    search_grid,
    shift_to_centre,
    template_poses,
)
from novum3d.model.matching import background_scores
from novum3d.model.priors import ClassPosePrior, PosePriors
from rendering import (
    cuboid_volume,
    pascal3d_intrinsics,
    pose_to_viewmat,
    rasterize_features,
    rotation_error,
    rotation_from_pose,
)

H, W = 40, 50  # the paper-like test scene (tests/test_rasterize_gpu.py uses it too)
h, w = 24, 30  # the small scene of the fast tests: a 1.8-long cuboid at distance 5 spans half the width


def oracle_maps(vol, feats, bank, az, el, th, dist, K, seed=0, size=(H, W)):
    """Feature maps rendered from the volume at known poses, noised, 40% of object pixels replaced by background.

    K is [3, 3] or [B, 3, 3] (per-image principal points)."""
    g = torch.Generator().manual_seed(seed)
    B = len(az)
    hh, ww = size
    out = rasterize_features(
        vol, feats, pose_to_viewmat(az, el, th, dist), K.expand(B, 3, 3), ww, hh, backend="torch", with_depth=False
    )
    maps = F.normalize(out.features + 0.1 * torch.randn(out.features.shape, generator=g), dim=-1)
    bg = bank[torch.randint(len(bank), (B, hh, ww), generator=g)]
    obj = out.alpha > 0.5
    hide = obj & (torch.rand(B, hh, ww, generator=g) < 0.4)
    maps = torch.where((~obj | hide)[..., None], bg, maps)
    return maps.permute(0, 3, 1, 2).contiguous()


def errors(res, az, el, th):
    return rotation_error(rotation_from_pose(res.azimuth, res.elevation, res.theta), rotation_from_pose(az, el, th))


def small_K(principal=None, distance_scale=1.0):
    """Intrinsics of the small scene at map scale (42 px per unit at distance 5), principal point in map cells."""
    principal = torch.tensor([[w / 2, h / 2]]) if principal is None else torch.as_tensor(principal).reshape(-1, 2)
    return pascal3d_intrinsics(1.0, 42.0 * 5 * 8 * distance_scale, principal * 8, downsample=8)


@functools.lru_cache
def small_scene(size=(0.8, 1.8, 0.6), seed=0):
    g = torch.Generator().manual_seed(seed)
    vol = cuboid_volume(size, 150)
    feats = F.normalize(torch.randn(len(vol), 16, generator=g), dim=-1)
    bank = F.normalize(torch.randn(48, 16, generator=g), dim=-1)
    return vol, feats, bank


def random_poses(n, seed, distance=5.0):
    """(azimuth, elevation, theta, distance) [n] each, within clean_prior's training distribution."""
    g = torch.Generator().manual_seed(seed)
    az = torch.rand(n, generator=g) * 2 * math.pi
    el = torch.deg2rad(torch.rand(n, generator=g) * 40 - 8)
    th = torch.deg2rad(torch.rand(n, generator=g) * 16 - 8)
    dist = distance * (0.9 + 0.2 * torch.rand(n, generator=g))
    return az, el, th, dist


def clean_prior(distance=5.0):
    """The training pose distribution of these tests: elevation -8..32, theta +-8 deg, distance +-10%."""
    g = torch.Generator().manual_seed(7)
    n = 200
    el = torch.deg2rad(torch.rand(n, generator=g) * 40 - 8)
    th = torch.deg2rad(torch.rand(n, generator=g) * 16 - 8)
    d = distance * (0.9 + 0.2 * torch.rand(n, generator=g))
    records = zip([0] * n, torch.zeros(n).tolist(), el.tolist(), th.tolist(), d.tolist(), strict=True)
    return PosePriors.from_annotations(["car"], records).for_class(0)


@functools.lru_cache
def shared_estimator():
    """One estimator for the small scene, so its templates are rendered once for several tests."""
    return PoseEstimator(PoseConfig(distance_factors=[1.0], backend="torch"))


def test_oracle_poses_are_recovered():
    """No prior: the authors' grid alone, at cfg.distance."""
    torch.manual_seed(0)
    vol = cuboid_volume((0.8, 1.8, 0.6), 400)
    feats = F.normalize(torch.randn(len(vol), 32), dim=-1)
    bank = F.normalize(torch.randn(64, 32), dim=-1)
    # ~70 px per unit at distance 5: the 1.8-long cuboid spans about half the 50-wide map.
    K = pascal3d_intrinsics(1.0, 70.0 * 5 * 8, (W * 4.0, H * 4.0), downsample=8)
    B = 4
    az, el, th, dist = random_poses(B, seed=1)
    maps = oracle_maps(vol, feats, bank, az, el, th, dist, K)
    est = PoseEstimator(PoseConfig(distance_factors=[1.0], backend="torch"))
    res = est.estimate(maps, vol, feats, bank, K.expand(B, 3, 3), class_key="car")
    err = errors(res, az, el, th)
    assert (err < math.pi / 6).all(), torch.rad2deg(err)
    assert torch.rad2deg(err).median() < 3.0, torch.rad2deg(err)
    assert ((res.distance - dist).abs() / dist).max() < 0.1
    # The render count the config's docstring states: 2 hypotheses x 10 steps, then 1 x 20, then 1 forward.
    per_image = est.cfg.renders_per_image(with_prior=False)
    assert per_image == {"forward_backward": 40, "forward": 1}
    assert est.rendered == {"template": 144, "forward_backward": B * 40, "forward": B}
    # Batched = one image at a time.
    one = est.estimate(maps[:1], vol, feats, bank, K.expand(1, 3, 3), class_key="car")
    torch.testing.assert_close(one.azimuth, res.azimuth[:1], atol=1e-4, rtol=0)
    torch.testing.assert_close(one.elevation, res.elevation[:1], atol=1e-4, rtol=0)
    assert est.rendered["template"] == 144  # cached


def test_small_oracle_with_a_prior():
    """The small scene with the training prior: its block is refined too (3 hypotheses)."""
    vol, feats, bank = small_scene()
    K = small_K()
    B = 4
    az, el, th, dist = random_poses(B, seed=1)
    maps = oracle_maps(vol, feats, bank, az, el, th, dist, K, size=(h, w))
    est = shared_estimator()
    before = dict(est.rendered)
    res = est.estimate(maps, vol, feats, bank, K.expand(B, 3, 3), class_key="car", prior=clean_prior())
    err = errors(res, az, el, th)
    assert (err < math.pi / 6).all() and torch.rad2deg(err).median() < 3.0, torch.rad2deg(err)
    # Coarse Gaussians (2 cells wide) at the silhouette pull the distance in a little.
    assert ((res.distance - dist).abs() / dist).max() < 0.2
    per_image = est.cfg.renders_per_image(with_prior=True)
    assert per_image == {"forward_backward": 50, "forward": 1}
    assert est.rendered["forward_backward"] - before["forward_backward"] == B * 50
    assert est.rendered["forward"] - before["forward"] == B


def test_off_centre_principal_point_is_shifted_exactly_and_poses_are_recovered():
    vol, feats, bank = small_scene()
    # An integer offset: shifting the off-centre render back gives the centred render exactly.
    pose = (torch.tensor([0.7]), torch.tensor([0.3]), torch.tensor([0.1]), torch.tensor([5.0]))
    K0, K1 = small_K(), small_K([[w / 2 + 2, h / 2 - 1]])
    vm = pose_to_viewmat(*pose)
    r0, r1 = (rasterize_features(vol, feats, vm, k, w, h, backend="torch", with_depth=False) for k in (K0, K1))
    off = principal_offsets(K1, (h, w))
    assert off.tolist() == [[2, -1]]
    f, bg = shift_to_centre(r1.features, r1.alpha, off, pad_background=-5.0)
    # Equal up to the renderer's own dependence on the image position (tiles, FOV clamp): < 3e-3.
    torch.testing.assert_close(f[:, 1:, : w - 2], r0.features[:, 1:, : w - 2], atol=3e-3, rtol=0)
    wrong, _ = shift_to_centre(r1.features, r1.alpha, -off)
    assert (wrong[:, 1:, 2:] - r0.features[:, 1:, 2:]).abs().max() > 0.3
    assert (bg[:, :1] == -5.0).all() and (bg[:, :, w - 2 :] == -5.0).all() and (f[:, :1] == 0).all()

    # Oracles whose principal points sit 5% of the width (and height) off the centre, both ways.
    pp = torch.tensor([[w * 0.55, h * 0.45], [w * 0.45, h * 0.55]])
    Ks = small_K(pp)
    az, el, th = (
        torch.tensor([1.0, 4.0]),
        torch.deg2rad(torch.tensor([12.0, 25.0])),
        torch.deg2rad(torch.tensor([5.0, -6.0])),
    )
    dist = torch.tensor([5.2, 4.7])
    maps = oracle_maps(vol, feats, bank, az, el, th, dist, Ks, seed=3, size=(h, w))
    est = shared_estimator()
    res = est.estimate(maps, vol, feats, bank, Ks, class_key="car", prior=clean_prior())
    err = errors(res, az, el, th)
    assert (err < math.pi / 6).all() and torch.rad2deg(err).max() < 8.0, torch.rad2deg(err)

    # Template scores of noise-free off-centre maps rank the templates as those of the same poses seen
    # with a centred camera do.
    def clean(K):
        vm = pose_to_viewmat(az, el, th, dist)
        out = rasterize_features(vol, feats, vm, K.expand(2, 3, 3), w, h, backend="torch", with_depth=False)
        return torch.where(out.alpha[..., None] > 0.5, F.normalize(out.features, dim=-1), bank[0]).permute(0, 3, 1, 2)

    grid = search_grid(est.cfg, 5.0, clean_prior())
    _, renders = est.templates(("car", "cpu", 210000, 210000, h, w, grid), vol, feats, small_K()[0], (h, w), grid)
    scores = []
    for maps_, Ks_ in ((clean(Ks), Ks), (clean(small_K()), small_K().expand(2, 3, 3)), (clean(Ks), small_K())):
        bg = background_scores(maps_, bank)
        f, b = shift_to_centre(maps_.permute(0, 2, 3, 1), bg, principal_offsets(Ks_.expand(2, 3, 3), (h, w)))
        scores.append(est.score_templates(renders, f, b))
    diff = scores[0] - scores[1]  # border cells (padded, or shifted out) add one constant per image
    assert (diff - diff.mean(1, keepdim=True)).abs().max() < 0.01
    assert (scores[0].argmax(1) == scores[1].argmax(1)).all()
    assert (scores[2].argmax(1) != scores[1].argmax(1)).any()  # unshifted, the off-centre maps pick other templates
    one = est.estimate(maps[1:], vol, feats, bank, Ks[1:], class_key="car", prior=clean_prior())
    torch.testing.assert_close(one.azimuth, res.azimuth[1:], atol=1e-4, rtol=0)
    torch.testing.assert_close(one.theta, res.theta[1:], atol=1e-4, rtol=0)


def test_poses_outside_the_training_range_are_recovered():
    """Elevation 60 / theta 25 and elevation -35 / theta -20 deg: beyond the prior (elevation -8..32,
    theta +-8), reached through the authors' grid, which a prior never removes."""
    vol, feats, bank = small_scene()
    K = small_K()
    az = torch.tensor([2.0, 5.5])
    el, th = torch.deg2rad(torch.tensor([60.0, -35.0])), torch.deg2rad(torch.tensor([25.0, -20.0]))
    dist = torch.tensor([5.0, 5.3])
    maps = oracle_maps(vol, feats, bank, az, el, th, dist, K, seed=4, size=(h, w))
    res = shared_estimator().estimate(maps, vol, feats, bank, K.expand(2, 3, 3), class_key="car", prior=clean_prior())
    err = errors(res, az, el, th)
    assert (err < math.pi / 6).all(), torch.rad2deg(err)


def test_priors_give_each_class_its_own_distance():
    """Two classes seen by one camera at their own distances (a thin one at 10, a large flat one at
    20: each fills about 40% of the map, as in the synthetic data), no distance given: each starts
    at its prior's median distance, not at cfg.distance (5)."""
    shapes, distances = [(0.3, 0.3, 0.8), (1.2, 1.6, 0.5)], [10.0, 20.0]
    g = torch.Generator().manual_seed(5)
    records = []
    for y, d in enumerate(distances):
        for _ in range(50):
            el, th = float(torch.rand(1, generator=g)) * 0.5, float(torch.randn(1, generator=g)) * 0.07
            records.append((y, 0.0, el, th, d * (0.9 + 0.2 * float(torch.rand(1, generator=g)))))
    priors = PosePriors.from_annotations(["bottle", "table"], records)
    assert abs(priors.for_class(1).distance_median - 20.0) < 0.6
    cfg = PoseConfig(elevations_deg=[0.0, 30.0], thetas_deg=[0.0], backend="torch")  # a small floor: fast
    est = PoseEstimator(cfg, priors=priors)
    K = small_K()
    az, el, th = (
        torch.tensor([0.4, 3.5]),
        torch.deg2rad(torch.tensor([10.0, 22.0])),
        torch.deg2rad(torch.tensor([2.0, -3.0])),
    )
    for y, (shape, d) in enumerate(zip(shapes, distances, strict=True)):
        vol, feats, bank = small_scene(shape, seed=y)
        dist = torch.tensor([d * 1.07, d * 0.94])
        maps = oracle_maps(vol, feats, bank, az, el, th, dist, K, seed=y, size=(h, w))
        res = est.estimate(maps, vol, feats, bank, K.expand(2, 3, 3), class_key=y)  # the prior comes from est.priors
        assert (errors(res, az, el, th) < math.pi / 6).all(), (y, torch.rad2deg(errors(res, az, el, th)))
        assert ((res.distance - dist).abs() / dist).max() < 0.1, (y, res.distance, dist)
    medians = sorted(k[-1].distances[1] for k in est._templates)  # the middle factor of [0.8, 1, 1.25]
    assert abs(medians[0] - 10.0) < 0.3 and abs(medians[1] - 20.0) < 0.6, medians


def test_flip_hypotheses_are_kept_and_can_win():
    """A volume whose features are symmetric under azimuth + pi except at one end. With 3 azimuth bins
    (0, 120, 240 deg) and the truth at 180, the template at 0 (the twin) matches best; refined alone it
    stays there, refined with its flip the true pose wins on the asymmetric end."""
    g = torch.Generator().manual_seed(11)
    vol = cuboid_volume((0.8, 1.8, 0.6), 150)
    proj = torch.randn(3, 64, generator=g) * 3.0
    mix = torch.randn(64, 16, generator=g)

    def emb(p):
        return torch.cos(p @ proj) @ mix

    p = vol.means
    feats = emb(p) + emb(p * torch.tensor([-1.0, -1.0, 1.0]))
    tip = p[:, 1] > 0.45
    feats[tip] = torch.randn(int(tip.sum()), 16, generator=g) * feats.norm(dim=-1).mean()
    feats = F.normalize(feats, dim=-1)
    bank = F.normalize(torch.randn(48, 16, generator=g), dim=-1)
    K = small_K()
    az, el, th, dist = torch.tensor([math.pi]), torch.tensor([0.35]), torch.tensor([0.0]), torch.tensor([5.0])
    maps = oracle_maps(vol, feats, bank, az, el, th, dist, K, seed=6, size=(h, w))
    grid = {"azimuth_bins": 3, "elevations_deg": [20.0], "thetas_deg": [0.0], "distance_factors": [1.0], "top_k": 1}
    out = {}
    for flips in (False, True):
        est = PoseEstimator(PoseConfig(flip_hypotheses=flips, backend="torch", **grid))
        out[flips] = est.estimate(maps, vol, feats, bank, K, class_key="sym")
        assert est.cfg.hypotheses(with_prior=False) == (2 if flips else 1)
    assert errors(out[False], az, el, th).item() > 2.5  # the twin
    assert errors(out[True], az, el, th).item() < math.pi / 18, errors(out[True], az, el, th)
    assert out[True].flipped.item() and out[True].score.item() > out[False].score.item()


def test_search_grid_keeps_the_floor_and_follows_priors():
    cfg = PoseConfig()
    floor = search_grid(cfg, 5.0)
    assert floor.blocks == (((-30.0, 0.0, 30.0, 60.0), (-30.0, 0.0, 30.0)),) and floor.distances == (4.0, 5.0, 6.25)
    assert len(template_poses(floor)) == 144
    # A prior inside the floor adds a denser block over its range.
    inside = search_grid(cfg, 5.0, clean_prior())
    assert inside.blocks[0] == floor.blocks[0] and inside.blocks[1] == ((0.0, 15.0, 30.0), (-10.0, 0.0, 10.0))
    assert len(template_poses(inside)) == 12 * (12 + 9 - 2)
    # A prior beyond it extends it; distances follow a wide distance spread; nothing is removed.
    high = ClassPosePrior(10, 5.0, 3.0, 9.0, math.radians(50), math.radians(85), math.radians(-40), math.radians(40))
    grid = search_grid(cfg, 5.0, high)
    assert grid.blocks[0] == floor.blocks[0] and grid.blocks[1] == (
        (45.0, 60.0, 75.0, 90.0),
        (-40.0, -30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 30.0, 40.0),
    )
    assert (
        grid.distances[0] < 3.0 * 1.12
        and grid.distances[-1] > 9.0 / 1.12
        and set(floor.distances) <= set(grid.distances)
    )
    assert search_grid(PoseConfig(prior_grid=False), 5.0, high).blocks == floor.blocks
    # Every template's azimuth + pi twin is on the grid, and twins are mutual.
    poses, flips = template_poses(grid), flip_index(grid)
    assert (flips[flips] == torch.arange(len(flips))).all()
    diff = torch.remainder(poses[flips, 0] - poses[:, 0], 2 * math.pi)
    torch.testing.assert_close(diff, torch.full_like(diff, math.pi))
    torch.testing.assert_close(poses[flips, 1:], poses[:, 1:])
    assert flip_index(SearchGrid.single(3, [0.0], [0.0])) is None


def test_prior_distance_margin_keeps_templates_and_refinement_in_the_prior():
    """margin m: template distances and every refined distance lie in [low / m, high * m]; an object
    rendered nearer than that ends at the bound; margin 0 or a distance the caller gives leaves it free."""
    prior = clean_prior()  # distance 4.5..5.5 (+-10%)
    lo, hi = prior.distance_low / 1.05, prior.distance_high * 1.05
    cfg = PoseConfig(prior_distance_margin=1.05, elevations_deg=[0.0, 30.0], thetas_deg=[0.0], backend="torch")
    assert distance_bounds(cfg, prior) == (lo, hi)
    assert distance_bounds(cfg, prior, prior_distance=False) is None and distance_bounds(cfg, None) is None
    assert distance_bounds(PoseConfig(), prior) is None
    grid = search_grid(cfg, prior.distance_median, prior)
    free = search_grid(PoseConfig(elevations_deg=[0.0, 30.0], thetas_deg=[0.0]), prior.distance_median, prior)
    assert min(free.distances) < lo and max(free.distances) > hi  # the factors 0.8 and 1.25 reach beyond
    assert all(lo - 1e-6 <= d <= hi + 1e-6 for d in grid.distances), grid.distances
    with pytest.raises(ValueError, match="prior_distance_margin"):
        PoseConfig(prior_distance_margin=0.5).validate()

    vol, feats, bank = small_scene()
    K = small_K()
    az, el, th = torch.tensor([0.5, 2.0]), torch.deg2rad(torch.tensor([10.0, 20.0])), torch.tensor([0.0, 0.05])
    dist = torch.tensor([3.8, 5.0])  # the first nearer than the prior allows
    maps = oracle_maps(vol, feats, bank, az, el, th, dist, K, seed=3, size=(h, w))
    bounded = PoseEstimator(cfg).estimate(maps, vol, feats, bank, K.expand(2, 3, 3), class_key="car", prior=prior)
    assert ((bounded.distance >= lo * (1 - 1e-5)) & (bounded.distance <= hi * (1 + 1e-5))).all(), bounded.distance
    assert abs(bounded.distance[0].item() - lo) < 1e-3 * lo  # held at the bound
    assert abs(bounded.distance[1].item() - 5.0) < 0.5
    free_est = PoseEstimator(dataclasses.replace(cfg, prior_distance_margin=0.0))
    unbounded = free_est.estimate(maps, vol, feats, bank, K.expand(2, 3, 3), class_key="car", prior=prior)
    assert unbounded.distance[0].item() < lo * 0.97, unbounded.distance  # free, it moves towards 3.8
    given = PoseEstimator(cfg).estimate(maps, vol, feats, bank, K.expand(2, 3, 3), "car", prior=prior, distance=4.0)
    assert given.distance[0].item() < lo * 0.97, given.distance  # a given distance is never bounded


def test_count_inliers_counts_near_matches_that_beat_the_background_under_the_object():
    rendered = torch.zeros(1, 2, 2, 4)
    rendered[0, :, :, :3] = torch.tensor([0.5, 0.0, 0.0]) * 0.8  # alpha-weighted centre (0.5, 0, 0)
    rendered[0, :, :, 3] = 0.8
    rendered[0, 1, 1, 3] = 0.4  # the object barely covers this pixel
    points = torch.tensor([[0.5, 0.0, 0.1], [0.5, 0.0, 0.3]]).expand(2, 2, 3)[None]  # 0.1 and 0.3 away
    matched = torch.tensor([[[True, True], [False, True]]])
    # (0, 0): near, matched -> in; (0, 1): 0.3 away -> out; (1, 0): not matched; (1, 1): alpha < 0.5.
    assert count_inliers(rendered, points, matched, radius=0.2).item() == 0.25
    assert count_inliers(rendered, points, matched, radius=0.5).item() == 0.5


def test_inlier_ranking_recovers_oracle_poses_and_its_template_product_matches_the_reference():
    """``ranking="inliers"``: each pixel's best Gaussian must lie near the surface point a pose
    renders there. On oracle maps (40% of the object hidden) the truth has more inliers than poses
    30 deg away; the template product equals :func:`count_inliers` of the same renders; the
    estimates match the default ranking's; batch-1 equals batched."""
    vol, feats, bank = small_scene()
    K = small_K()
    B = 4
    az, el, th, dist = random_poses(B, seed=1)
    maps = oracle_maps(vol, feats, bank, az, el, th, dist, K, size=(h, w))
    fmap = maps.permute(0, 2, 3, 1)
    points, matched = best_matches(fmap, feats, vol.means, background_scores(maps, bank), budget=1000)
    assert points.shape == (B, h, w, 3) and matched.shape == (B, h, w)
    cfg = PoseConfig(distance_factors=[1.0], backend="torch", ranking="inliers", inlier_radius=1.5)
    est = PoseEstimator(cfg)
    radius = 1.5 * vol.spacing
    match = (points, matched, radius)
    truth = torch.stack([az, el, th, dist.log()], -1)[:, None]
    off = truth + torch.tensor([math.radians(30.0), 0.0, 0.0, 0.0])
    score = torch.zeros(B, 1)
    at_truth, at_off = (est._rank(vol, p, K.expand(B, 3, 3), score, match, (h, w))[:, 0] for p in (truth, off))
    assert (at_truth > at_off + 0.03).all(), (at_truth, at_off)

    grid = search_grid(cfg, 5.0, clean_prior())
    _, renders = est.templates(("points",), vol, est._point_features(vol), small_K()[0], (h, w), grid, torch.float32)
    fast = est.score_template_inliers(renders, points, matched, radius)  # [B, T]
    T = renders.shape[1]
    per_template = renders.permute(1, 0, 2).reshape(T, h, w, 4)  # pixel-major -> [T, h, w, 4]
    ref = count_inliers(per_template[None], points[:, None], matched[:, None], radius)
    assert fast.shape == ref.shape == (B, T)
    # The product form may put a point lying on the radius on the other side: at most one pixel.
    assert (fast - ref).abs().max() <= 1.0 / (h * w) + 1e-6
    assert (fast != ref).float().mean() < 0.01

    res = est.estimate(maps, vol, feats, bank, K.expand(B, 3, 3), class_key="car", prior=clean_prior())
    err = errors(res, az, el, th)
    assert (err < math.pi / 6).all() and torch.rad2deg(err).median() < 6.0, torch.rad2deg(err)
    base = shared_estimator().estimate(maps, vol, feats, bank, K.expand(B, 3, 3), class_key="car", prior=clean_prior())
    assert (errors(res, base.azimuth, base.elevation, base.theta) < math.radians(3.0)).all()
    one = est.estimate(maps[1:2], vol, feats, bank, K.expand(1, 3, 3), class_key="car", prior=clean_prior())
    torch.testing.assert_close(one.azimuth, res.azimuth[1:2], atol=1e-4, rtol=0)
    torch.testing.assert_close(one.elevation, res.elevation[1:2], atol=1e-4, rtol=0)
    # Per image the pruning renders the points of 3 hypotheses, the end 1 and the final score 1;
    # the two _rank calls above rendered B each.
    assert est.rendered["forward"] == 2 * B + (B + 1) * (3 + 1 + 1)


def test_canonical_pose_keeps_the_rotation():
    g = torch.Generator().manual_seed(0)
    a, e, t = (torch.rand(64, generator=g) * 8 - 4 for _ in range(3))
    ca, ce, ct = canonical_pose(a, e, t)
    assert (ca >= 0).all() and (ca < 2 * math.pi).all() and (ce.abs() <= math.pi / 2 + 1e-6).all()
    assert (ct > -math.pi - 1e-6).all() and (ct <= math.pi + 1e-6).all()
    err = rotation_error(rotation_from_pose(ca, ce, ct).double(), rotation_from_pose(a, e, t).double())
    assert err.max() < 1e-5


def test_priors_round_trip_through_a_checkpoint(tmp_path):
    records = [
        (0, 0.1, 0.2, 0.05, 20.0),
        (0, 1.0, 0.4, -0.1, 24.0),
        (0, 3.0, -0.1, 6.2, 22.0),
        (2, 0.0, 0.3, 0.0, 32.0),
    ]
    priors = PosePriors.from_annotations(["bottle", "car", "diningtable"], records)
    assert priors.for_class("car") is None and priors.for_class(1) is None and priors.for_class(7) is None
    bottle = priors.for_class(0)
    assert bottle.count == 3 and bottle.distance_median == 22.0
    assert bottle.distance_low < 22.0 < bottle.distance_high
    assert bottle.theta_high < 0.1  # 6.2 rad wraps to -0.08
    torch.save({"model": {}, "pose_priors": priors.to_dict()}, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert PosePriors.from_dict(loaded["pose_priors"]) == priors
    import json

    assert PosePriors.from_dict(json.loads(json.dumps(priors.to_dict()))) == priors
    bad = priors.to_dict()
    del bad["per_class"]["bottle"]["distance_low"]
    with pytest.raises(ValueError, match="distance_low"):
        PosePriors.from_dict(bad)
    with pytest.raises(ValueError, match="format"):
        PosePriors.from_dict({"classes": []})
    with pytest.raises(ValueError, match="class index 5"):
        PosePriors.from_annotations(["a"], [(5, 0.0, 0.0, 0.0, 1.0)])


def test_mean_clutter_no_clutter_and_a_soft_max_keep_a_gradient_where_the_bank_knows_the_object():
    """A bank that also holds noisy copies of the object's own features (a trained bank can: occluded
    object cells are offered to it) beats the rendered object on most cells. Under clutter="max" the
    objective is then flat in the pose and refinement started 20 deg off stays there; the authors'
    "mean" background leaves the object's cells counting, and refinement converges; so do their default,
    no background ("none"), and the max softened at the training temperature, which credits object
    scores just under the bank's."""
    vol, feats, rbank = small_scene()
    g = torch.Generator().manual_seed(1)
    copies = feats[torch.randperm(len(feats), generator=g)[:60]]
    bank = torch.cat([rbank, F.normalize(copies + 0.3 * torch.randn(copies.shape, generator=g), dim=-1)])
    K = small_K()
    B = 6
    az, el, th, dist = random_poses(B, seed=3)
    maps = oracle_maps(vol, feats, rbank, az, el, th, dist, K, size=(h, w))
    init = torch.stack([az + math.radians(20), el, th, dist], 1)
    err = {}
    variants = {"max": {}, "mean": {"clutter": "mean"}, "none": {"clutter": "none"}, "soft": {"temperature": 0.07}}
    for name, kw in variants.items():
        est = PoseEstimator(PoseConfig(distance_factors=[1.0], backend="torch", **kw))
        res = est.estimate(maps, vol, feats, bank, K.expand(B, 3, 3), init=init)
        err[name] = torch.rad2deg(errors(res, az, el, th))
    assert int(((err["max"] - 20).abs() < 0.5).sum()) >= 4, err["max"]  # never moved
    assert bool((err["mean"] < 3.0).all()), err["mean"]
    assert bool((err["none"] < 3.0).all()), err["none"]
    assert bool(((err["soft"] - 20).abs() > 0.5).all()) and float(err["soft"].median()) < 5.0, err["soft"]


def test_config_validation():
    for bad in ({"distance_factors": []}, {"top_k": 0}, {"prior_top_k": -1}, {"betas": (1.0, 0.5)},
                {"lr_final": 1.0}, {"template_dtype": "half"}, {"keep": 0}, {"clutter": "median"},
                {"temperature": -0.1}, {"ranking": "votes"}, {"inlier_radius": 0.0}):  # fmt: skip
        with pytest.raises(ValueError):
            PoseConfig(**bad).validate()
    cfg = PoseConfig(flip_hypotheses=True, prior_top_k=0, prune_after=0)
    assert cfg.hypotheses() == 4 and cfg.renders_per_image() == {"forward_backward": 120, "forward": 4}


def test_classifier_picks_the_right_class_among_twelve_random_volumes():
    from novum3d.model.matching import class_scores

    torch.manual_seed(2)
    vols = [cuboid_volume((0.6 + 0.1 * i, 1.8 - 0.05 * i, 0.6), 300) for i in range(12)]
    feats = [F.normalize(torch.randn(len(v), 32), dim=-1) for v in vols]
    bank = F.normalize(torch.randn(64, 32), dim=-1)
    K = pascal3d_intrinsics(1.0, 70.0 * 5 * 8, (W * 4.0, H * 4.0), downsample=8)
    C = torch.zeros(12, max(len(v) for v in vols), 32)
    valid = torch.zeros(12, C.shape[1], dtype=torch.bool)
    for y, f in enumerate(feats):
        C[y, : len(f)], valid[y, : len(f)] = f, True
    g = torch.Generator().manual_seed(3)
    for y, (vol, f) in enumerate(zip(vols, feats, strict=True)):
        az, el = torch.rand(2, generator=g) * 2 * math.pi, torch.deg2rad(torch.rand(2, generator=g) * 30)
        maps = oracle_maps(vol, f, bank, az, el, torch.zeros(2), torch.full((2,), 5.0), K, seed=y)
        assert (class_scores(maps, C, valid, bank).argmax(1) == y).all()


def test_priors_docstring_example():
    import doctest

    import novum3d.model.priors as module

    assert doctest.testmod(module).failed == 0


def test_template_cache_knows_the_volume_and_its_features():
    """Templates are cached per class key *and* the tensors they were rendered from: a fresh view of the
    same features hits; another volume under the same key, or features changed in place, render anew
    (a benchmark looping over volume sizes once scored a 1,960-Gaussian volume with 1,090's templates)."""
    vol, feats, bank = small_scene()
    K = small_K()
    az, el, th, dist = random_poses(2, seed=1)
    maps = oracle_maps(vol, feats, bank, az, el, th, dist, K, size=(h, w))
    cfg = PoseConfig(azimuth_bins=4, elevations_deg=[0.0], thetas_deg=[0.0], distance_factors=[1.0], steps=0,
                     prior_grid=False, backend="torch")  # fmt: skip
    est = PoseEstimator(cfg)
    stacked = torch.stack([feats, feats])  # [classes, N, D], as a model holds them

    def run(volume, features):
        est.estimate(maps, volume, features, bank, K.expand(2, 3, 3), class_key="car")
        return est.rendered["template"]

    once = run(vol, stacked[0, :])
    assert once == 4
    assert run(vol, stacked[0, :]) == once  # a fresh view of the same memory: cached
    other, other_feats, _ = small_scene(size=(1.0, 2.0, 0.8), seed=1)
    assert run(other, other_feats) == 2 * once  # same class key, another volume
    stacked.mul_(-1.0)  # features trained further, in place
    assert run(vol, stacked[0, :]) == 3 * once
    assert run(vol, stacked[0, :]) == 3 * once


def test_pose_config_from_fields_and_overrides():
    """How commands build a PoseConfig from --pose: overrides on top, the base untouched, errors naming the flag."""
    from novum3d.config import ConfigError
    from novum3d.inference.pose import pose_config

    base = {"steps": 12}
    cfg = pose_config(base, ["ranking=inliers", "steps=5"])
    assert (cfg.steps, cfg.ranking) == (5, "inliers") and base == {"steps": 12}
    assert pose_config(base, []).steps == 12
    with pytest.raises(ConfigError, match="--pose-variant"):
        pose_config(base, ["no_such_field=1"], where="--pose-variant")


@pytest.mark.parametrize("clutter,temperature", [("max", 0.0), ("max", 0.1), ("mean", 0.0), ("none", 0.0)])
def test_score_poses_is_the_objective_the_estimate_reached(clutter, temperature):
    """Under each objective: an estimate's score is score_poses at its pose; per-cell terms average to it;
    the truth outscores a pose 40 deg of elevation off on oracle maps; a malformed pose tensor is refused."""
    vol, feats, bank = small_scene()
    az, el, th, dist = random_poses(2, seed=3)
    K = small_K().expand(2, 3, 3)
    maps = oracle_maps(vol, feats, bank, az, el, th, dist, K, size=(h, w))
    cfg = PoseConfig(distance_factors=[1.0], backend="torch", steps=4, clutter=clutter, temperature=temperature)
    est = PoseEstimator(cfg)
    res = est.estimate(maps, vol, feats, bank, K)
    found = torch.stack([res.azimuth, res.elevation, res.theta, res.distance], -1)[:, None]  # [2, 1, 4]
    torch.testing.assert_close(est.score_poses(maps, vol, feats, bank, K, found)[:, 0], res.score, atol=1e-5, rtol=0)
    truth = torch.stack([az, el, th, dist], -1)
    off = truth.clone()
    off[:, 1] += math.radians(40)
    poses = torch.stack([truth, off], 1)  # [2, 2, 4]
    scores = est.score_poses(maps, vol, feats, bank, K, poses)
    cells = est.score_poses(maps, vol, feats, bank, K, poses, per_cell=True)
    assert cells.shape == (2, 2, h, w)
    torch.testing.assert_close(cells.mean(dim=(-2, -1)), scores)
    assert (scores[:, 0] > scores[:, 1]).all(), scores
    with pytest.raises(ValueError, match="poses"):
        est.score_poses(maps, vol, feats, bank, K, truth)
