import math

import torch
import torch.nn.functional as F

from novum3d.inference.pose import PoseConfig, PoseEstimator
from rendering import (
    cuboid_volume,
    pascal3d_intrinsics,
    pose_to_viewmat,
    rasterize_features,
    rotation_error,
    rotation_from_pose,
)

H, W = 40, 50


def oracle_maps(vol, feats, bank, az, el, th, dist, K, seed=0):
    """Feature maps rendered from the volume at known poses, noised, 40% of object pixels replaced by background."""
    g = torch.Generator().manual_seed(seed)
    B = len(az)
    out = rasterize_features(
        vol.means, vol.quats, vol.scales, vol.opacities, feats, pose_to_viewmat(az, el, th, dist), K.expand(B, 3, 3),
        W, H, backend="torch", with_depth=False,
    )  # fmt: skip
    maps = F.normalize(out.features + 0.1 * torch.randn(out.features.shape, generator=g), dim=-1)
    bg = bank[torch.randint(len(bank), (B, H, W), generator=g)]
    obj = out.alpha > 0.5
    hide = obj & (torch.rand(B, H, W, generator=g) < 0.4)
    maps = torch.where((~obj | hide)[..., None], bg, maps)
    return maps.permute(0, 3, 1, 2).contiguous()


def test_oracle_poses_are_recovered():
    torch.manual_seed(0)
    vol = cuboid_volume((0.8, 1.8, 0.6), 400)
    feats = F.normalize(torch.randn(len(vol), 32), dim=-1)
    bank = F.normalize(torch.randn(64, 32), dim=-1)
    # ~70 px per unit at distance 5: the 1.8-long cuboid spans about half the 50-wide map.
    K = pascal3d_intrinsics(1.0, 70.0 * 5 * 8, (W * 4.0, H * 4.0), downsample=8)
    g = torch.Generator().manual_seed(1)
    B = 4
    az = torch.rand(B, generator=g) * 2 * math.pi
    el = torch.deg2rad(torch.rand(B, generator=g) * 40 - 8)
    th = torch.deg2rad(torch.rand(B, generator=g) * 16 - 8)
    dist = 5.0 * (0.9 + 0.2 * torch.rand(B, generator=g))
    maps = oracle_maps(vol, feats, bank, az, el, th, dist, K)
    est = PoseEstimator(PoseConfig(steps=40, lr=0.05, backend="torch"))
    res = est.estimate(maps, vol, feats, bank, K.expand(B, 3, 3), class_key="car")
    err = rotation_error(rotation_from_pose(res.azimuth, res.elevation, res.theta), rotation_from_pose(az, el, th))
    assert (err < math.pi / 6).all(), torch.rad2deg(err)
    assert torch.rad2deg(err).median() < 3.0, torch.rad2deg(err)
    assert ((res.distance - dist).abs() / dist).max() < 0.1
    # Batched = one image at a time.
    one = est.estimate(maps[:1], vol, feats, bank, K.expand(1, 3, 3), class_key="car")
    torch.testing.assert_close(one.azimuth, res.azimuth[:1], atol=1e-4, rtol=0)
    torch.testing.assert_close(one.elevation, res.elevation[:1], atol=1e-4, rtol=0)


def test_classifier_picks_the_right_class_among_twelve_random_volumes():
    from novum3d.inference.classify import class_scores

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
