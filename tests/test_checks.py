"""Value checks behind one switch (rendering.checks): raised while on, skipped while off, and pose
refinement steps that render without them, so that a step makes no host sync of its own."""

import contextlib
import dataclasses
import inspect
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import novum3d.inference.pose.estimator as pose_module
import rendering.rasterize
from benchmarks.common import cuboid_scene
from novum3d.inference.pose import PoseConfig, PoseEstimator
from novum3d.inference.pose.templates import render_templates
from rendering import (
    GaussianVolume,
    check_raster_inputs,
    checks_enabled,
    pascal3d_intrinsics,
    pose_to_viewmat,
    rasterize_features,
    rasterize_gaussians,
    value_checks,
    viewmat_to_pose,
)
from tests.helpers import random_scene
from tests.test_pose import oracle_maps, random_poses, small_K, small_scene

ROOT = Path(__file__).resolve().parents[1]


def _render(**change):
    means, quats, scales, opacities, feats, viewmats, Ks, w, h = random_scene(n=6, batch=2, d=3)
    kwargs = dict(
        means=means, quats=quats, scales=scales, opacities=opacities, features=feats,
        viewmats=viewmats, Ks=Ks, width=w, height=h, backend="torch",
    )  # fmt: skip
    for name, edit in change.items():
        kwargs[name] = edit(kwargs[name].clone())
    return rasterize_gaussians(**kwargs)


def _set(index, value):
    def edit(t):
        t[index] = value
        return t

    return edit


def _volume(scale):
    scales = torch.tensor([[0.1, 0.1, 0.1], [0.1, scale, 0.1]])
    return GaussianVolume(torch.zeros(2, 3), scales, torch.tensor([[1.0, 0, 0, 0]] * 2), torch.ones(2), 1.0)


def _camera(index, value):
    return _set(index, value)(pose_to_viewmat(0.3, 0.2, 0.0, 5.0))


# Every value check of rendering: a call that fails it, and the error it raises (as before the switch).
BAD_VALUES = {
    "NaN mean": (lambda: _render(means=_set((0, 0), math.nan)), "means: contains non-finite values"),
    "inf viewmat": (lambda: _render(viewmats=_set((1, 0, 3), math.inf)), "viewmats: contains non-finite values"),
    "NaN K": (lambda: _render(Ks=_set((0, 0, 2), math.nan)), "Ks: contains non-finite values"),
    "NaN scale": (lambda: _render(scales=_set((2, 1), math.nan)), "scales: contains non-finite values"),
    "scale <= 0": (lambda: _render(scales=_set((2, 1), 0.0)), "scales: must be > 0"),
    "opacity > 1": (lambda: _render(opacities=_set(3, 1.5)), r"opacities: must lie in \[0, 1\]"),
    "opacity < 0": (lambda: _render(opacities=_set(3, -0.1)), r"opacities: must lie in \[0, 1\]"),
    "distance 0": (lambda: pose_to_viewmat(0.1, 0.2, 0.0, torch.tensor([5.0, 0.0])), "distance: must be > 0"),
    "distance < 0": (lambda: pose_to_viewmat(0.1, 0.2, 0.0, -1.0), "distance: must be > 0"),
    "NaN azimuth": (lambda: pose_to_viewmat(math.nan, 0.2, 0.0, 5.0), "azimuth: must be finite"),
    "NaN principal": (lambda: pascal3d_intrinsics(1.0, 3000.0, (math.nan, 2.0)), "principal: must be finite"),
    "inf focal": (lambda: pascal3d_intrinsics(math.inf, 3000.0, (1.0, 2.0)), "focal: must be finite"),
    "focal 0": (lambda: pascal3d_intrinsics(0.0, 3000.0, (1.0, 2.0)), "focal and viewport: must be > 0"),
    "camera behind": (lambda: viewmat_to_pose(_camera((0, 2, 3), -5.0)), r"in front of the camera \(t_z > 0\)"),
    "camera off axis": (lambda: viewmat_to_pose(_camera((0, 0, 3), 1.0)), "does not look at the object origin"),
    "volume scale <= 0": (lambda: _volume(-0.1), "GaussianVolume.scales: must be > 0"),
}  # fmt: skip


@pytest.mark.parametrize("call", list(BAD_VALUES), ids=list(BAD_VALUES))
def test_value_checks_raise_while_on_and_are_skipped_while_off(call):
    fn, match = BAD_VALUES[call]
    assert checks_enabled()  # the default (RENDERING_CHECKS unset)
    with pytest.raises(ValueError, match=match):
        fn()
    with value_checks(False):
        fn()
    with value_checks(False), value_checks(True), pytest.raises(ValueError, match=match):
        fn()


def test_shape_checks_run_with_value_checks_off():
    with value_checks(False):
        with pytest.raises(ValueError, match=r"means: expected shape \[N, 3\]"):
            _render(means=lambda t: t[:, :2])
        with pytest.raises(ValueError, match="pose batch sizes disagree"):
            pose_to_viewmat(torch.zeros(3), torch.zeros(2), 0.0, 5.0)
        with pytest.raises(ValueError, match=r"viewmats: expected shape \[B, 4, 4\]"):
            viewmat_to_pose(torch.eye(4))


def test_the_switch_comes_back_after_the_block_even_when_it_raises():
    with pytest.raises(KeyError):
        with value_checks(False):
            assert not checks_enabled()
            with value_checks(True):
                assert checks_enabled()
            assert not checks_enabled()
            raise KeyError("inside")
    assert checks_enabled()


def test_the_switch_belongs_to_the_thread_that_sets_it():
    seen = {}
    inside, done = threading.Event(), threading.Event()

    def other():
        inside.wait()
        seen["other"] = checks_enabled()
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with value_checks(False):
        inside.set()
        done.wait()
    thread.join()
    assert seen == {"other": True}


@pytest.mark.parametrize(("value", "enabled"), [(None, True), ("1", True), ("0", False), ("off", False)])
def test_environment_variable_sets_the_default_at_import(value, enabled):
    env = {k: v for k, v in os.environ.items() if k != "RENDERING_CHECKS"} | {"PYTHONPATH": str(ROOT)}
    if value is not None:
        env["RENDERING_CHECKS"] = value
    probe = (
        "import rendering\n"
        "print(rendering.checks_enabled())\n"
        "try:\n    rendering.pose_to_viewmat(0.0, 0.0, 0.0, -1.0)\n    print('no error')\n"
        "except ValueError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [str(enabled), "distance: must be > 0, got [-1.0]" if enabled else "no error"]


# Pose refinement: inputs checked once, steps unchecked, the final render checked.


def _pose_case(B=2, steps=4):
    vol, feats, bank = small_scene()
    K = small_K()
    az, el, th, dist = random_poses(B, seed=3)
    maps = oracle_maps(vol, feats, bank, az, el, th, dist, K, size=(24, 30))
    cfg = PoseConfig(distance_factors=[1.0], backend="torch", steps=steps, prune_after=2)
    return cfg, (maps, vol, feats, bank, K.expand(B, 3, 3)), torch.stack([az, el, th, dist], -1)


@pytest.fixture
def render_log(monkeypatch):
    """checks_enabled() at each of the estimator's rasterize_features calls."""
    log = []

    def logged(*args, **kwargs):
        log.append(checks_enabled())
        return rasterize_features(*args, **kwargs)

    monkeypatch.setattr(pose_module, "rasterize_features", logged)
    return log


def test_pose_estimates_are_identical_with_checks_on_and_off(render_log):
    cfg, args, _ = _pose_case()
    results, estimators = {}, {}
    for enabled in (True, False):
        with value_checks(enabled):
            estimators[enabled] = PoseEstimator(cfg)
            results[enabled] = estimators[enabled].estimate(*args, class_key="car")
    for field in ("azimuth", "elevation", "theta", "distance", "score", "flipped"):
        assert torch.equal(getattr(results[True], field), getattr(results[False], field)), field
    # Each time: the templates (render_templates' views_per_call views a call per distance, checked as the
    # caller has it), 4 unchecked steps, the final render.
    per_call = inspect.signature(render_templates).parameters["views_per_call"].default
    distances = len(cfg.distance_factors)
    n = distances * math.ceil(estimators[True].rendered["template"] / distances / per_call)
    assert render_log == [True] * n + [False] * 4 + [True] + [False] * (n + 5)


def test_bad_pose_inputs_are_refused_before_the_first_step(render_log):
    cfg, (maps, vol, feats, bank, Ks), init = _pose_case()
    est = PoseEstimator(cfg)
    with pytest.raises(ValueError, match="azimuth: must be finite"):
        est.estimate(maps, vol, feats, bank, Ks, init=init.index_fill(1, torch.tensor(0), math.nan))
    with pytest.raises(ValueError, match="distance: must be > 0"):
        est.estimate(maps, vol, feats, bank, Ks, init=init.index_fill(1, torch.tensor(3), 0.0))
    with pytest.raises(ValueError, match="Ks: contains non-finite values"):
        est.estimate(maps, vol, feats, bank, Ks.clone().fill_(math.inf), init=init)
    with pytest.raises(ValueError, match=r"opacities: must lie in \[0, 1\]"):
        opaque = GaussianVolume(vol.means, vol.scales, vol.quats, 2 * vol.opacities, vol.spacing)
        est.estimate(maps, opaque, feats, bank, Ks, init=init)
    assert render_log == [] and est.rendered["forward_backward"] == 0


def test_poses_that_turn_non_finite_during_refinement_are_refused_by_the_final_render():
    cfg, (maps, vol, feats, bank, Ks), init = _pose_case()
    maps = maps.clone()
    maps[0, :, 12, 15] = math.nan  # the score, hence the gradient, of image 0's poses becomes NaN
    est = PoseEstimator(cfg)
    with pytest.raises(ValueError, match="azimuth: must be finite"):
        est.estimate(maps, vol, feats, bank, Ks, init=init)
    assert est.rendered == {"template": 0, "forward_backward": 2 * 4, "forward": 0}


@contextlib.contextmanager
def sync_debug(mode):
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(before)


@pytest.mark.gpu
def test_value_checks_are_the_host_syncs_of_the_camera_and_input_checks_on_cuda():
    a = torch.rand(8, device="cuda")
    vol, feats, viewmats, Ks, w, h = cuboid_scene(batch=2, d=8, device="cuda")
    args = (vol, feats, viewmats, Ks, w, h)
    with sync_debug("error"):
        with pytest.raises(RuntimeError, match="synchronizing"):  # the checks are what syncs
            pose_to_viewmat(a, a, a, a + 4.0)
        with pytest.raises(RuntimeError, match="synchronizing"):
            check_raster_inputs(*args)
        with value_checks(False):
            pose_to_viewmat(a, a, a, a + 4.0)
            check_raster_inputs(*args)


@pytest.mark.gpu
def test_pose_refinement_steps_make_no_host_sync_but_gsplats_own(monkeypatch):
    """Every refinement step (forward, backward, Adam, pruning) runs under sync-debug "error" mode.

    gsplat's forward is exempt: it reads its tile-intersection count on the host to allocate its
    lists (isect_tiles), a sync of the backend itself that no switch removes. Its backward is not
    exempt. The templates, the check before the steps and the final render lie outside the steps.
    """
    real_value_checks, real_backend = pose_module.value_checks, rendering.rasterize.rasterize_gsplat
    entered = {"unchecked": 0, "gsplat": 0}

    @contextlib.contextmanager
    def steps_under_sync_errors(enabled):
        entered["unchecked"] += not enabled
        with real_value_checks(enabled), contextlib.nullcontext() if enabled else sync_debug("error"):
            yield

    def backend(*args, **kwargs):
        entered["gsplat"] += 1
        with sync_debug("default"):
            return real_backend(*args, **kwargs)

    monkeypatch.setattr(pose_module, "value_checks", steps_under_sync_errors)
    monkeypatch.setattr(rendering.rasterize, "rasterize_gsplat", backend)
    cfg, (maps, vol, feats, bank, Ks), _ = _pose_case(steps=4)
    est = PoseEstimator(dataclasses.replace(cfg, backend="gsplat"))
    res = est.estimate(maps.cuda(), vol.to("cuda"), feats.cuda(), bank.cuda(), Ks.cuda(), class_key="car")
    assert res.azimuth.is_cuda and torch.isfinite(res.score).all()
    assert est.rendered["forward_backward"] == 2 * (2 * 2 + 1 * 2)  # 2 hypotheses x 2 steps, pruned to 1 x 2
    assert entered == {"unchecked": 1, "gsplat": 1 + 4 + 1}  # templates, steps, final render
    assert torch.cuda.get_sync_debug_mode() == 0
