import math

import numpy as np
import pytest
import torch

from rendering.cameras import (
    pascal3d_intrinsics,
    pose_to_viewmat,
    project_pascal3d,
    project_points,
    rotation_error,
    rotation_from_pose,
    viewmat_to_pose,
)


def toolbox_project(x3d, a, e, theta, d, f, principal, viewport):
    """PASCAL3D+ toolbox ``project_3d.m``, transcribed literally in float64 numpy."""
    C = np.array([d * math.cos(e) * math.sin(a), -d * math.cos(e) * math.cos(a), d * math.sin(e)])
    a, e = -a, -(math.pi / 2 - e)
    Rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    Rx = np.array([[1, 0, 0], [0, math.cos(e), -math.sin(e)], [0, math.sin(e), math.cos(e)]])
    R = Rx @ Rz
    P = np.diag([viewport * f, viewport * f, -1.0]) @ np.hstack([R, (-R @ C)[:, None]])
    x = P @ np.hstack([x3d, np.ones((len(x3d), 1))]).T
    x = x[:2] / x[2]
    R2d = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    x = (R2d @ x).T
    x[:, 1] *= -1
    return x + np.asarray(principal)


def random_poses(n, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, generator=g, dtype=dtype) * 2 * math.pi
    e = (torch.rand(n, generator=g, dtype=dtype) - 0.5) * math.pi * 0.9
    t = (torch.rand(n, generator=g, dtype=dtype) - 0.5) * 2 * math.pi * 0.95
    d = 2 + 8 * torch.rand(n, generator=g, dtype=dtype)
    return a, e, t, d


def test_toolbox_formula_matches_on_random_poses():
    g = np.random.default_rng(1)
    pts = g.uniform(-1, 1, size=(50, 3))
    a, e, t, d = random_poses(20)
    for i in range(20):
        f, pp, vp = 1.0 + i * 0.1, (300.0 + i, 200.0 - i), 3000.0
        ref = toolbox_project(pts, a[i].item(), e[i].item(), t[i].item(), d[i].item(), f, pp, vp)
        ours = project_pascal3d(torch.from_numpy(pts), a[i], e[i], t[i], d[i], f, pp, vp)
        assert ours.shape == (50, 2)
        assert np.abs(ours.numpy() - ref).max() < 1e-3


def test_float32_projection_agrees_with_toolbox_well_under_a_pixel():
    pts = np.random.default_rng(2).uniform(-1, 1, size=(100, 3))
    ref = toolbox_project(pts, 0.7, 0.3, -0.2, 6.0, 1.0, (320.0, 240.0), 3000.0)
    ours = project_pascal3d(torch.from_numpy(pts).float(), 0.7, 0.3, -0.2, 6.0, 1.0, (320.0, 240.0))
    assert ours.dtype == torch.float32
    assert np.abs(ours.numpy() - ref).max() < 0.05


def test_hand_worked_frontal_view():
    # Azimuth 0, elevation 0: the camera sits on -y looking along +y; x stays right, z is up.
    # A point at (x, 0, z) lies at depth d, so it lands at principal + f*v*(x, -z)/d.
    pts = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    uv = project_pascal3d(pts, 0.0, 0.0, 0.0, 10.0, 1.0, (100.0, 50.0), 3000.0)
    expected = torch.tensor([[100.0, 50.0], [400.0, 50.0], [100.0, -250.0]], dtype=torch.float64)
    torch.testing.assert_close(uv, expected)


def test_hand_worked_side_and_top_views():
    pts = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    # Azimuth 90 deg: camera on +x looking along -x; +y points right in the image.
    uv = project_pascal3d(pts[:1], math.pi / 2, 0.0, 0.0, 10.0, 1.0, (0.0, 0.0), 3000.0)
    torch.testing.assert_close(uv, torch.tensor([[300.0, 0.0]], dtype=torch.float64))
    # Elevation 90 deg: camera above, looking down; +x right, +y up in the image.
    uv = project_pascal3d(pts, 0.0, math.pi / 2, 0.0, 10.0, 1.0, (0.0, 0.0), 3000.0)
    torch.testing.assert_close(uv, torch.tensor([[0.0, -300.0], [300.0, 0.0]], dtype=torch.float64))
    # In-plane theta = 90 deg turns image x into image -y (y is flipped after the rotation).
    uv = project_pascal3d(pts[1:], 0.0, 0.0, math.pi / 2, 10.0, 1.0, (0.0, 0.0), 3000.0)
    torch.testing.assert_close(uv, torch.tensor([[0.0, -300.0]], dtype=torch.float64), atol=1e-4, rtol=0)


def test_viewmat_intrinsics_path_equals_project_pascal3d():
    pts = torch.randn(30, 3, dtype=torch.float64)
    a, e, t, d = random_poses(8)
    vm = pose_to_viewmat(a, e, t, d)
    K = pascal3d_intrinsics(torch.full((8,), 1.5, dtype=torch.float64), 3000.0, torch.tensor([50.0, 60.0]))
    ours = project_points(pts, vm, K)
    ref = project_pascal3d(pts, a, e, t, d, 1.5, (50.0, 60.0), 3000.0)
    torch.testing.assert_close(ours, ref)


def test_viewmat_is_rigid_opencv_and_looks_at_origin():
    a, e, t, d = random_poses(16)
    vm = pose_to_viewmat(a, e, t, d)
    R = vm[:, :3, :3]
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=R.dtype).expand(16, 3, 3))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(16, dtype=R.dtype))
    torch.testing.assert_close(vm[:, :3, 3], torch.stack([0 * d, 0 * d, d], -1))
    torch.testing.assert_close(vm[:, 3], torch.tensor([0, 0, 0, 1.0], dtype=R.dtype).expand(16, 4))


def test_downsampled_intrinsics_scale_pixel_coordinates():
    pts = torch.randn(10, 3, dtype=torch.float64)
    vm = pose_to_viewmat(0.4, 0.2, 0.1, 6.0)
    full = project_points(pts, vm, pascal3d_intrinsics(1.0, 3000.0, (400.0, 320.0)))
    small = project_points(pts, vm, pascal3d_intrinsics(1.0, 3000.0, (400.0, 320.0), downsample=8))
    torch.testing.assert_close(small, full / 8)


def test_viewmat_round_trip():
    a, e, t, d = random_poses(64)
    a2, e2, t2, d2 = viewmat_to_pose(pose_to_viewmat(a, e, t, d))
    torch.testing.assert_close(a2, torch.remainder(a, 2 * math.pi))
    torch.testing.assert_close(e2, e)
    torch.testing.assert_close(t2, t)
    torch.testing.assert_close(d2, d)
    torch.testing.assert_close(pose_to_viewmat(a2, e2, t2, d2), pose_to_viewmat(a, e, t, d))


def test_viewmat_to_pose_rejects_camera_not_looking_at_origin():
    vm = pose_to_viewmat(0.1, 0.2, 0.3, 5.0)
    vm[0, 0, 3] = 0.5
    with pytest.raises(ValueError, match="does not look at the object origin"):
        viewmat_to_pose(vm)


def test_rotation_from_pose_matches_nemo_formula():
    a, e, t = 0.8, -0.3, 0.4
    Rz = np.array([[math.cos(-a), -math.sin(-a), 0], [math.sin(-a), math.cos(-a), 0], [0, 0, 1]])
    ee = -(math.pi / 2 - e)
    Rx = np.array([[1, 0, 0], [0, math.cos(ee), -math.sin(ee)], [0, math.sin(ee), math.cos(ee)]])
    Rt = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
    ref = Rt @ Rx @ Rz
    ours = rotation_from_pose(torch.tensor(a, dtype=torch.float64), e, t)[0]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12)


def test_rotation_error_properties():
    a, e, t, _ = random_poses(32)
    R1 = rotation_from_pose(a, e, t)
    R2 = rotation_from_pose(a.roll(1), e.roll(1), t.roll(1))
    torch.testing.assert_close(rotation_error(R1, R2), rotation_error(R2, R1))
    assert rotation_error(R1, R1).abs().max() < 1e-7
    # Half turns about several axes give exactly pi.
    half_turns = torch.diag_embed(
        torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]], dtype=torch.float64)
    )
    torch.testing.assert_close(rotation_error(R1[:3], R1[:3] @ half_turns), torch.full((3,), math.pi).double())


def test_rotation_error_is_the_geodesic_angle_and_matches_logm():
    from scipy.linalg import logm

    g = torch.Generator().manual_seed(3)
    for angle in [1e-6, 1e-3, 0.3, 1.0, 2.5, math.pi - 1e-3, math.pi - 1e-6]:
        axis = torch.nn.functional.normalize(torch.randn(3, generator=g, dtype=torch.float64), dim=0)
        K = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]], dtype=torch.float64)
        R = torch.linalg.matrix_exp(angle * K)
        err = rotation_error(torch.eye(3, dtype=torch.float64), R).item()
        assert abs(err - angle) < 1e-9 * max(1.0, angle) + 1e-12
        if 1e-3 <= angle <= 2.5:
            ref = np.sqrt((np.real(logm(R.numpy())) ** 2).sum()) / np.sqrt(2)
            assert abs(err - ref) < 1e-8


def test_pose_gradients_flow_to_projection():
    a = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    e = torch.tensor([0.2], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.1], dtype=torch.float64, requires_grad=True)
    d = torch.tensor([5.0], dtype=torch.float64, requires_grad=True)
    pts = torch.randn(5, 3, dtype=torch.float64)
    torch.autograd.gradcheck(lambda *p: project_pascal3d(pts, *p, 1.0, (10.0, 20.0)), (a, e, t, d))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"distance": 0.0}, "distance: must be > 0"),
        ({"distance": -1.0}, "distance: must be > 0"),
        ({"azimuth": float("nan")}, "azimuth: must be finite"),
        ({"elevation": torch.zeros(2, 2)}, "elevation: expected a scalar or a 1-D tensor"),
        ({"theta": torch.zeros(3), "azimuth": torch.zeros(2)}, "batch sizes disagree"),
    ],
)
def test_bad_poses_raise_clear_errors(kwargs, match):
    pose = {"azimuth": 0.1, "elevation": 0.2, "theta": 0.0, "distance": 5.0} | kwargs
    with pytest.raises(ValueError, match=match):
        pose_to_viewmat(**pose)


def test_bad_intrinsics_and_points_raise():
    with pytest.raises(ValueError, match="principal"):
        pascal3d_intrinsics(1.0, 3000.0, (1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="focal and viewport"):
        pascal3d_intrinsics(0.0, 3000.0, (1.0, 2.0))
    with pytest.raises(ValueError, match=r"points: expected shape \[N, 3\]"):
        project_pascal3d(torch.zeros(4, 2), 0.0, 0.0, 0.0, 5.0, 1.0, (0.0, 0.0))


def test_pose_batches_fields_and_carries_subclass_fields():
    from novum3d.evaluation.metrics import pose_errors
    from novum3d.inference.pose import PoseResult
    from rendering import Pose

    pose = Pose(torch.tensor([0.1, 0.2, 0.3]), 0.2, torch.tensor([0.0, 0.1, -0.1]), 5.0)
    assert pose.distance.shape == (3,) and pose.distance.dtype == torch.float32
    with pytest.raises(ValueError, match=r"theta: expected a scalar or a 1-D tensor \[B\], got shape \(3, 1\)"):
        Pose(0.0, 0.0, torch.zeros(3, 1), 5.0)
    with pytest.raises(ValueError, match="pose batch sizes disagree: azimuth=3, elevation=2"):
        Pose(torch.zeros(3), torch.zeros(2), 0.0, 5.0)
    torch.testing.assert_close(pose.viewmat(), pose_to_viewmat(pose.azimuth, 0.2, pose.theta, 5.0))
    torch.testing.assert_close(pose.rotation(), rotation_from_pose(pose.azimuth, 0.2, pose.theta))
    result = PoseResult(*pose.as_tensor().unbind(-1), score=torch.tensor([0.5, 0.6, 0.7]))
    picked = result[torch.tensor([False, True, True])]
    assert isinstance(picked, PoseResult) and picked.score.tolist() == pytest.approx([0.6, 0.7])
    assert picked.flipped is None and len(PoseResult.cat([picked, result[0]])) == 3
    as_dict = {k: getattr(pose, k) for k in ("azimuth", "elevation", "theta")}
    torch.testing.assert_close(pose_errors(result, as_dict), torch.zeros(3, dtype=torch.float64))
