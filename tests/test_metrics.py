import math

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from novum3d.categories import load_categories
from novum3d.evaluation.metrics import (
    PASCAL3D_SYMMETRY,
    pose_errors,
    pose_errors_symmetric,
    summarize,
    symmetry_of,
)
from rendering import rotation_error, rotation_from_pose


def _rz(phi: float) -> torch.Tensor:
    c, s = math.cos(phi), math.sin(phi)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _brute_force_continuous(r_pred: torch.Tensor, r_gt: torch.Tensor) -> float:
    """min over phi of angle(R_pred, R_gt Rz(phi)): a 3600-step grid, then a bounded local search."""
    phis = torch.linspace(0, 2 * math.pi, 3601, dtype=torch.float64)[:-1]
    c, s = torch.cos(phis), torch.sin(phis)
    z, o = torch.zeros_like(c), torch.ones_like(c)
    rz = torch.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(-1, 3, 3)
    errs = rotation_error(r_pred.expand(len(phis), 3, 3), r_gt @ rz)
    best = float(phis[errs.argmin()])
    step = 2 * math.pi / 3600
    res = minimize_scalar(
        lambda phi: float(rotation_error(r_pred[None], (r_gt @ _rz(phi))[None])),
        bounds=(best - step, best + step),
        method="bounded",
        options={"xatol": 1e-12},
    )
    return min(float(res.fun), float(errs.min()))


def _random_poses(n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "azimuth": torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi,
        "elevation": (torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * math.pi,
        "theta": (torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * 2 * math.pi,
    }


def test_symmetric_errors_against_brute_force():
    gt = _random_poses(24, 0)
    pred = _random_poses(24, 1)
    # Some predictions near the truth, some near its azimuth + pi twin, some spun about the object axis.
    pred["azimuth"][:6] = gt["azimuth"][:6] + 0.05
    pred["azimuth"][6:12] = gt["azimuth"][6:12] + math.pi + 0.1
    for k in ("elevation", "theta"):
        pred[k][:12] = gt[k][:12] + 0.03
    plain = pose_errors(pred, gt).double()
    none = pose_errors_symmetric(pred, gt, "none")
    two = pose_errors_symmetric(pred, gt, "two-fold")
    cont = pose_errors_symmetric(pred, gt, "continuous")
    torch.testing.assert_close(none, plain)
    twin = dict(pred, azimuth=pred["azimuth"] + math.pi)
    torch.testing.assert_close(two, torch.minimum(plain, pose_errors(twin, gt).double()))
    assert (two[6:12] < 0.2).all() and (plain[6:12] > 2.5).all()
    r_pred = rotation_from_pose(pred["azimuth"], pred["elevation"], pred["theta"])
    r_gt = rotation_from_pose(gt["azimuth"], gt["elevation"], gt["theta"])
    brute = torch.tensor([_brute_force_continuous(r_pred[i], r_gt[i]) for i in range(24)], dtype=torch.float64)
    torch.testing.assert_close(cont, brute, atol=1e-6, rtol=0)
    assert (cont <= two + 1e-9).all() and (two <= plain + 1e-9).all()  # nested symmetry groups


def test_continuous_symmetry_closed_form_cases():
    """R Rz(phi) is the pose with azimuth - phi, so azimuth never matters for a solid of revolution;
    the error is the angle between the images of the object's axis, (-sin t cos e, cos t cos e, sin e)."""
    e, t = 0.2, 0.1
    gt = {"azimuth": torch.tensor([0.3]), "elevation": torch.tensor([e]), "theta": torch.tensor([t])}

    def err(**change):
        return float(
            pose_errors_symmetric(dict(gt, **{k: torch.tensor([v]) for k, v in change.items()}), gt, "continuous")
        )

    assert err(azimuth=0.3 + 1.3) < 1e-6 and err(azimuth=0.3 + math.pi) < 1e-6
    assert math.isclose(err(elevation=e - 0.3), 0.3, abs_tol=1e-6)  # along a great circle
    d = 0.25  # theta turns the axis about the optical axis: a small circle at elevation e
    assert math.isclose(err(theta=t + d), math.acos(math.sin(e) ** 2 + math.cos(e) ** 2 * math.cos(d)), abs_tol=1e-6)


def test_per_image_symmetries_and_table():
    gt = _random_poses(3, 2)
    pred = dict(gt, azimuth=gt["azimuth"] + math.pi)  # everything seen from the other side
    err = pose_errors_symmetric(pred, gt, ["none", "two-fold", "continuous"])
    assert err[0] > 0.5 and err[1] < 1e-6 and err[2] < 1e-6
    assert set(PASCAL3D_SYMMETRY) == {c.name for c in load_categories("pascal3d")}
    assert {c for c, s in PASCAL3D_SYMMETRY.items() if s != "none"} == {"bottle", "diningtable"}
    assert symmetry_of("bottle") == "continuous" and symmetry_of("diningtable") == "two-fold"
    assert symmetry_of("car") == "none" and symmetry_of("unicorn") == "none"


def test_summaries_report_symmetric_errors_beside_the_plain_ones():
    records = [
        {"label": 0, "predicted": 0, "pose_error": 3.0, "pose_error_symmetric": 0.01},
        {"label": 0, "predicted": 0, "pose_error": 0.3, "pose_error_symmetric": 0.3},
    ]
    s = summarize(records, ["diningtable"])
    assert s["acc_pi_6"] == 0.5 and s["acc_pi_6_symmetric"] == 1.0 and s["acc_pi_18_symmetric"] == 0.5
    assert math.isclose(s["median_error_symmetric_deg"], math.degrees(np.median([0.01, 0.3])))
    assert "acc_pi_6_symmetric" not in summarize(
        [{k: v for k, v in r.items() if "symmetric" not in k} for r in records], ["x"]
    )
