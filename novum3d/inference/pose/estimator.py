"""The pose estimator: templates, then Adam through the renderer on every hypothesis of every image at once."""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass

import torch
from torch import Tensor

from rendering import (
    GaussianVolume,
    Pose,
    check_raster_inputs,
    pose_to_viewmat,
    rasterize_features,
    resolve_backend,
    value_checks,
)

from ...model.matching import background_scores
from ...model.priors import ClassPosePrior, PosePriors
from .config import PoseConfig
from .grid import SearchGrid, distance_bounds, flip_index, prior_mask, search_grid
from .objective import (
    best_matches,
    compare,
    compare_cells,
    count_inliers,
    inliers_then_score,
    principal_offsets,
    shift_to_centre,
)
from .refinement import adam_step, canonical_pose, refinement_lr
from .templates import (
    TemplateCache,
    TemplateStore,
    point_features,
    render_templates,
    score_template_inliers,
    score_templates,
    template_key,
    tensor_identity,
)


@dataclass(frozen=True, eq=False)
class PoseResult(Pose):
    """Estimated poses (azimuth in [0, 2 pi), elevation in [-pi/2, pi/2], theta in (-pi, pi], radians;
    distance), each [B], with what the estimate says about itself."""

    score: Tensor  # [B] final render-and-compare score (higher is better)
    flipped: Tensor | None = None  # [B] bool: the winner started as a flip hypothesis


class PoseEstimator:
    """Estimate PASCAL3D+ poses of images of known (or predicted) classes.

    1. Templates (azimuth x elevation x theta, at the initial distance times each distance factor) are
       rendered once per (class, focal, map size, distance, grid) with the principal point at the map centre
       and cached (at one ``reference_focal`` for every image when given; on disk with a ``store``). Each
       image's feature map (and background scores) is shifted by the integer cell offset between its
       principal point and the map centre, so one product scores every image against every template. Each
       orientation keeps its best distance, then the ``top_k`` best orientations are kept (plus
       ``prior_top_k`` from the prior's block, and their azimuth + pi twins with ``flip_hypotheses``).
    2. Adam (cosine-decayed lr) on (azimuth, elevation, theta, log distance) of every hypothesis of every
       image at once, one :func:`rendering.rasterize_features` call per step, with each image's own
       intrinsics; after ``prune_after`` steps only the ``keep`` best hypotheses of each image go on.
    3. The best final score wins (``ranking="inliers"``: correspondence inliers rank, the score breaks ties).

    The inputs are checked once before the steps, which render under ``rendering.value_checks(False)``: a
    value check reads its answer on the host, and 11 per step kept the GPU waiting. Poses that turn
    non-finite on the way are still refused, by the checked final render.

    Args:
        cfg: settings (:class:`PoseConfig`).
        priors: optional :class:`~novum3d.model.priors.PosePriors`; when given, ``estimate``
            looks up ``priors.for_class(class_key)`` unless a ``prior`` is passed explicitly (so
            ``class_key`` should then be the class index or name).
        max_cached: template sets kept (least recently used dropped first); one set of the default
            grid with a prior is about 1.4 GB on CUDA at 80x100 x 128 channels.
        reference_focal: render every template set at this focal length (map pixels) instead of one
            set per focal length in the batch. An image of focal f scores them as a camera of focal
            ``reference_focal`` at distance ``d`` sees what one of focal f sees at ``d * f / reference_focal``
            (exact for a flat object, close for one small against its distance), and refines under its
            own intrinsics: images of many sizes, letterboxed to one map size, share one set per class.
        store: a :class:`~.templates.TemplateStore` that keeps template sets on disk between runs
            (``class_key`` then names the class in its keys).

    Attributes:
        rendered: views rendered so far, ``{"template", "forward_backward", "forward"}``.
    """

    def __init__(
        self,
        cfg: PoseConfig | None = None,
        priors: PosePriors | None = None,
        max_cached: int = 16,
        reference_focal: float | None = None,
        store: TemplateStore | None = None,
    ):
        self.cfg = cfg or PoseConfig()
        self.cfg.validate()
        self.priors = priors
        if reference_focal is not None and not reference_focal > 0:
            raise ValueError(f"reference_focal: must be > 0 (map pixels), got {reference_focal}")
        self.reference_focal = reference_focal
        self.store = store
        self._templates = TemplateCache(max_cached)
        self.rendered = {"template": 0, "forward_backward": 0, "forward": 0}

    @property
    def max_cached(self) -> int:
        return self._templates.max_entries

    def _render(self, volume: GaussianVolume, features: Tensor, viewmats: Tensor, Ks: Tensor, size) -> Tensor:
        """[V, h, w, D] renders of ``volume`` seen by viewmats [V, 4, 4] and Ks [V, 3, 3]."""
        h, w = size
        out = rasterize_features(volume, features, viewmats, Ks, w, h, backend=self.cfg.backend, with_depth=False)
        return out.features

    def _template_dtype(self, device: torch.device) -> torch.dtype:
        name = self.cfg.template_dtype
        if name == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return getattr(torch, name)

    def templates(
        self,
        key: Hashable,
        volume: GaussianVolume,
        features: Tensor,
        K: Tensor,
        size: tuple[int, int],
        grid: SearchGrid,
        dtype: torch.dtype | None = None,
        class_key: object = None,
        kind: str = "features",
    ) -> tuple[Tensor, Tensor]:
        """The grid's templates, cached per ``key``: ([T, 3] poses, [h*w, F*T, D] renders, see
        :func:`~.templates.render_templates`), in ``dtype`` (default :attr:`PoseConfig.template_dtype`'s).
        With a :attr:`store`, a set missing from memory is read from disk, or rendered and written there
        (``class_key`` and ``kind`` name it in the store's key)."""
        if (hit := self._templates.get(key)) is not None:
            return hit
        dtype = dtype or self._template_dtype(features.device)
        stored = None
        if self.store is not None:
            backend = resolve_backend(self.cfg.backend, features.device, torch.float32)
            stored = template_key(class_key, kind, volume, features, K, size, grid, dtype, features.device, backend)
            if (loaded := self.store.load(stored, features.device)) is not None:
                return self._templates.put(key, loaded)
        made = render_templates(self._render, volume, features, K, size, grid, dtype)
        self.rendered["template"] += made[1].shape[1]
        if stored is not None:
            made = self.store.save(stored, *made)
        return self._templates.put(key, made)

    score_templates = staticmethod(score_templates)
    score_template_inliers = staticmethod(score_template_inliers)
    _point_features = staticmethod(point_features)

    def estimate(
        self,
        feature_maps: Tensor,
        volume: GaussianVolume,
        volume_features: Tensor,
        bank: Tensor,
        Ks: Tensor,
        class_key: object = None,
        prior: ClassPosePrior | None = None,
        distance: float | None = None,
        init: Pose | Tensor | None = None,
        steps: int | None = None,
    ) -> PoseResult:
        """Poses of B images showing the same class.

        Args:
            feature_maps: [B, D, h, w] unit features.
            volume: the class's geometry; volume_features: [N, D]; bank: [M, D].
            Ks: [B, 3, 3] intrinsics at feature-map scale (images may differ in principal point
                and focal length).
            class_key: identifies the class for the template cache (and for ``self.priors``).
            prior: the class's pose prior; default ``self.priors.for_class(class_key)`` if the
                estimator holds priors.
            distance: initial distance; default the prior's median distance, else ``cfg.distance``.
            init: B poses (a :class:`~rendering.Pose`, or [B, 4] rows of azimuth, elevation, theta,
                distance) to refine from instead of the templates' best hypotheses: the diagnosis's
                "refinement started at the ground truth" (the bound the features set).
            steps: refinement steps instead of ``cfg.steps`` (0: the best template, the diagnosis's
                "template stage alone").
        """
        cfg = self.cfg
        B, _, h, w = feature_maps.shape
        if Ks.shape != (B, 3, 3):
            raise ValueError(f"Ks: expected [{B}, 3, 3], got {tuple(Ks.shape)}")
        if prior is None and self.priors is not None and class_key is not None:
            prior = self.priors.for_class(class_key)
        d0 = float(distance) if distance is not None else prior.distance_median if prior is not None else cfg.distance
        if not d0 > 0:
            raise ValueError(f"distance: must be > 0, got {d0}")
        scale = self._focal_scale(Ks)  # [B], or None: templates at each image's own focal
        bounds = distance_bounds(cfg, prior, prior_distance=distance is None)
        log_bounds = None if bounds is None else (math.log(bounds[0]), math.log(bounds[1]))
        if log_bounds is not None and scale is not None:  # the prior's distances, seen by each image's focal
            log_bounds = tuple(b + scale.log()[:, None] for b in log_bounds)
        bg = background_scores(feature_maps, bank, cfg.clutter)  # [B, h, w]
        fmap = feature_maps.permute(0, 2, 3, 1)  # [B, h, w, D]

        match = None  # (points, matched, radius) when hypotheses are ranked by inliers
        if init is not None:
            angles, dist, flipped = self._given_start(init, B, fmap)
        else:
            if cfg.ranking == "inliers":
                points, matched = best_matches(fmap, volume_features, volume.means, bg)
                match = (points, matched, cfg.inlier_radius * volume.spacing)
            plan = self._template_plan(Ks, (h, w), d0, prior, distance is not None, scale)
            angles, dist, flipped = self._template_hypotheses(
                feature_maps, volume, volume_features, Ks, fmap, bg, class_key, plan, scale, match
            )
        params = torch.cat([angles, dist.log()[..., None]], -1).to(fmap.dtype)  # [B, H, 4]
        n_steps = cfg.steps if steps is None else steps
        params, flipped = self._refine(
            params, flipped, volume, volume_features, Ks, fmap, bg, match, n_steps, log_bounds
        )

        with torch.no_grad():
            final = self._score(volume, volume_features, params, Ks, fmap, bg, (h, w))
        self.rendered["forward"] += B * params.shape[1]
        best = self._rank(volume, params, Ks, final, match, (h, w)).argmax(1)
        rows = torch.arange(B, device=feature_maps.device)
        chosen = params[rows, best]
        az, el, th = canonical_pose(chosen[:, 0], chosen[:, 1], chosen[:, 2])
        return PoseResult(
            azimuth=az,
            elevation=el,
            theta=th,
            distance=chosen[:, 3].exp(),
            score=final[rows, best],
            flipped=flipped[rows, best],
        )

    @staticmethod
    def _given_start(init: Pose | Tensor, B: int, fmap: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One hypothesis per image from given poses: ([B, 1, 3] angles, [B, 1] distances, [B, 1] flipped)."""
        if isinstance(init, Pose):
            init = init.as_tensor()
        init = init.to(fmap.device)
        if init.shape != (B, 4):
            raise ValueError(f"init: expected [{B}, 4] (azimuth, elevation, theta, distance), got {tuple(init.shape)}")
        flipped = torch.zeros(B, 1, dtype=torch.bool, device=fmap.device)  # one hypothesis: nothing to rank
        return init[:, None, :3].to(fmap.dtype), init[:, None, 3].to(fmap.dtype), flipped

    def _refine(
        self,
        params: Tensor,
        flipped: Tensor,
        volume: GaussianVolume,
        features: Tensor,
        Ks: Tensor,
        fmap: Tensor,
        bg: Tensor,
        match,
        steps: int,
        log_bounds: tuple[float, float] | None,
    ) -> tuple[Tensor, Tensor]:
        """``steps`` Adam steps up the score of hypotheses [B, H, 4] (azimuth, elevation, theta, log distance),
        pruned to ``cfg.keep`` per image after ``cfg.prune_after``; the distance projected into ``log_bounds``."""
        cfg = self.cfg
        B, H, _ = params.shape
        size = tuple(fmap.shape[1:3])
        if log_bounds is not None:
            params[..., 3].clamp_(*log_bounds)
        m, v = torch.zeros_like(params), torch.zeros_like(params)
        score = None
        # What every step renders is checked here, once: the steps render without value checks.
        self._check_render_inputs(volume, features, params, Ks, size)
        with value_checks(False):
            for step in range(steps):
                if 0 < cfg.prune_after == step and cfg.keep < H and score is not None:
                    rank = self._rank(volume, params, Ks, score, match, size)
                    keep = rank.topk(cfg.keep, dim=1).indices  # [B, keep]
                    params, m, v = (t.gather(1, keep[..., None].expand(-1, -1, 4)) for t in (params, m, v))
                    flipped = flipped.gather(1, keep)
                    H = cfg.keep
                p = params.detach().requires_grad_(True)
                score = self._score(volume, features, p, Ks, fmap, bg, size)  # [B, H]
                (grad,) = torch.autograd.grad((1 - score).sum(), p)
                self.rendered["forward_backward"] += B * H
                score = score.detach()
                params, m, v = adam_step(params, grad, m, v, step + 1, refinement_lr(cfg, step, steps), cfg.betas)
                if log_bounds is not None:  # projected: the step may not leave the prior's distances
                    params[..., 3].clamp_(*log_bounds)
        return params, flipped

    @torch.no_grad()
    def score_poses(
        self,
        feature_maps: Tensor,
        volume: GaussianVolume,
        volume_features: Tensor,
        bank: Tensor,
        Ks: Tensor,
        poses: Tensor,
        per_cell: bool = False,
    ) -> Tensor:
        """Render-and-compare scores of given poses, by the objective :meth:`estimate` climbs.

        Args:
            feature_maps: [B, D, h, w] unit features; volume, volume_features [N, D], bank [M, D]: one class.
            Ks: [B, 3, 3] intrinsics at feature-map scale.
            poses: [B, H, 4] rows of azimuth, elevation, theta (radians) and distance.
            per_cell: return each cell's term, max(object, background) [B, H, h, w], instead of their mean.

        Returns:
            [B, H] scores (an estimate's ``score`` for its own pose), or [B, H, h, w] with ``per_cell``.
        """
        B, _, h, w = feature_maps.shape
        if poses.dim() != 3 or poses.shape[0] != B or poses.shape[2] != 4:
            raise ValueError(f"poses: expected [{B}, H, 4], got {tuple(poses.shape)}")
        bg = background_scores(feature_maps, bank, self.cfg.clutter)
        fmap = feature_maps.permute(0, 2, 3, 1)
        params = torch.cat([poses[..., :3], poses[..., 3:].log()], -1).to(fmap.dtype)
        return self._score(volume, volume_features, params, Ks, fmap, bg, (h, w), per_cell=per_cell)

    def _focal_scale(self, Ks: Tensor) -> Tensor | None:
        """[B] each image's focal length over :attr:`reference_focal` (None without one)."""
        if self.reference_focal is None:
            return None
        return (Ks[:, 0, 0] * Ks[:, 1, 1]).sqrt() / self.reference_focal

    def _template_plan(
        self, Ks: Tensor, size: tuple[int, int], d0: float, prior, given: bool, scale: Tensor | None
    ) -> list[tuple[Tensor, Tensor, SearchGrid, tuple[int, int]]]:
        """The template sets a batch is scored against: ``(members [n], K0 [3, 3], grid, focal key)`` each,
        K0 with its principal point at the map centre. Without a reference focal, one set per focal length
        in the batch (today's images of one camera: one set); with one, one set at that focal for all,
        or, when the caller gave the distance (in each image's camera), one per focal ratio, each grid
        centred where its images' distance falls in the reference camera."""
        h, w = size
        cfg = self.cfg
        if scale is None:
            grid = search_grid(cfg, d0, prior, prior_distance=not given)
            focals = torch.round(Ks[:, :2, :2].diagonal(dim1=-2, dim2=-1) * 1000).long()  # [B, 2]
            plan = []
            for focal in torch.unique(focals, dim=0):
                members = torch.nonzero((focals == focal).all(1))[:, 0]
                K0 = Ks[members[0]].detach().clone()
                K0[0, 2], K0[1, 2] = w / 2, h / 2
                plan.append((members, K0, grid, (int(focal[0]), int(focal[1]))))
            return plan
        f = self.reference_focal
        K0 = torch.tensor([[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]], dtype=Ks.dtype, device=Ks.device)
        key = (round(f * 1000), round(f * 1000))
        if not given:
            return [(torch.arange(len(Ks), device=Ks.device), K0, search_grid(cfg, d0, prior), key)]
        ratios = torch.round(scale * 1000).long()
        plan = []
        for r in torch.unique(ratios):
            members = torch.nonzero(ratios == r)[:, 0]
            grid = search_grid(cfg, d0 / float(scale[members[0]]), prior, prior_distance=False)
            plan.append((members, K0, grid, key))
        return plan

    def _template_hypotheses(self, feature_maps, volume, volume_features, Ks, fmap, bg, class_key, plan,
                             scale=None, match=None):  # fmt: skip
        """Each image scored against its template set (:meth:`_template_plan`) with its principal point
        moved to the map centre: the kept hypotheses ([B, H, 3] angles, [B, H] distances, [B, H] flipped),
        distances times each image's focal ratio ``scale`` [B] when given. ``match``: (points
        [B, h, w, 3], matched [B, h, w], radius) from :func:`best_matches` ranks by inliers."""
        B, _, h, w = feature_maps.shape
        dev = feature_maps.device
        scores = poses = distances = None
        offsets = principal_offsets(Ks, (h, w))
        shifted_f, shifted_bg = shift_to_centre(fmap, bg, offsets)
        if match is not None:
            points, matched = shift_to_centre(match[0], match[1].float(), offsets, pad_background=0.0)
            matched = matched > 0.5
        with torch.no_grad():
            for members, K0, grid, focal in plan:
                key = (class_key, tensor_identity(volume.means), tensor_identity(volume_features), str(dev),
                       *focal, h, w, grid)  # fmt: skip
                poses, renders = self.templates(key, volume, volume_features, K0, (h, w), grid, class_key=class_key)
                s = score_templates(renders, shifted_f[members], shifted_bg[members], self.cfg.temperature)
                if match is not None:
                    _, point_renders = self.templates(
                        (*key, "points"), volume, point_features(volume), K0, (h, w), grid, torch.float32,
                        class_key=class_key, kind="points",
                    )  # fmt: skip
                    inliers = score_template_inliers(point_renders, points[members], matched[members], match[2])
                    s = inliers_then_score(inliers, s, h * w)
                if scores is None:
                    scores = s.new_empty(B, s.shape[1])
                    distances = torch.empty(B, len(grid.distances), device=dev, dtype=poses.dtype)
                scores[members] = s
                distances[members] = torch.tensor(grid.distances, device=dev, dtype=poses.dtype)
        if scale is not None:
            distances = distances * scale[:, None].to(distances.dtype)
        grid = plan[0][2]
        reserved = prior_mask(grid) if len(grid.blocks) > 1 else None
        return self._initial_hypotheses(scores, poses, flip_index(grid), distances, reserved)

    def _initial_hypotheses(
        self, scores: Tensor, poses: Tensor, flips: Tensor | None, distances: Tensor, reserved: Tensor | None
    ):
        """([B, H, 3] poses, [B, H] distances, [B, H] flipped) from [B, F*T] template scores against
        templates at each image's F ``distances`` [B, F].

        ``top_k`` orientations over the whole grid, then ``prior_top_k`` more among the ``reserved``
        templates ([T] bool: the prior's block) not picked yet; each also flipped when asked.
        """
        cfg = self.cfg
        B = scores.shape[0]
        T, nF = len(poses), distances.shape[1]
        best, f_idx = scores.view(B, nF, T).max(1)  # [B, T]: each orientation at its best distance
        lowest = torch.finfo(best.dtype).min
        if reserved is not None:
            reserved = reserved.to(scores.device)
        paired = cfg.flip_hypotheses and flips is not None
        if paired:
            # Orientations pair with their azimuth + pi twin: pick pairs, so that a pair is never
            # refined twice; each pair gives its better member and that one's flip.
            flips = flips.to(scores.device)
            twin = best[:, flips]
            canonical = torch.arange(T, device=scores.device) < flips
            value = torch.where(canonical, torch.maximum(best, twin), lowest)
            if reserved is not None:
                reserved = torch.where(canonical, reserved | reserved[flips], False)
        else:
            value = best
        picks = [value.topk(min(cfg.top_k, T), dim=1).indices]
        if reserved is not None and cfg.prior_top_k > 0 and bool(reserved.any()):
            rest = value.masked_fill(~reserved, lowest).scatter(1, picks[0], lowest)
            picks.append(rest.topk(min(cfg.prior_top_k, int(reserved.sum())), dim=1).indices)
        idx = torch.cat(picks, 1)  # [B, k]
        if paired:
            idx = torch.where(best.gather(1, idx) >= twin.gather(1, idx), idx, flips[idx])
        k = idx.shape[1]
        init = poses[idx]  # [B, k, 3]
        dist = distances.gather(1, f_idx.gather(1, idx))  # [B, k]
        flipped = torch.zeros(B, k, dtype=torch.bool, device=scores.device)
        if cfg.flip_hypotheses:
            flip = init.clone()
            flip[..., 0] = flip[..., 0] + math.pi
            init = torch.cat([init, flip], 1)
            dist = torch.cat([dist, dist], 1)
            flipped = torch.cat([flipped, ~flipped], 1)
        return init, dist, flipped

    def _rank(self, volume, params: Tensor, Ks: Tensor, score: Tensor, match, size) -> Tensor:
        """[B, H] what ranks [B, H, 4] hypotheses: their ``score`` [B, H], or with ``match`` (see
        :meth:`_template_hypotheses`) their inlier share, the score breaking ties."""
        if match is None:
            return score
        points, matched, radius = match
        B, H, _ = params.shape
        with torch.no_grad():
            rendered = self._render(volume, point_features(volume), *self._cameras(params.detach(), Ks), size)
        self.rendered["forward"] += B * H
        inliers = count_inliers(rendered.view(B, H, *rendered.shape[1:]), points[:, None], matched[:, None], radius)
        return inliers_then_score(inliers, score, size[0] * size[1])

    @staticmethod
    def _cameras(params: Tensor, Ks: Tensor) -> tuple[Tensor, Tensor]:
        """Viewmats [B*H, 4, 4] and intrinsics [B*H, 3, 3] of [B, H, 4] hypotheses (azimuth, elevation,
        theta, log distance) of images with intrinsics Ks [B, 3, 3]."""
        B, H, _ = params.shape
        flat = params.reshape(B * H, 4)
        viewmats = pose_to_viewmat(flat[:, 0], flat[:, 1], flat[:, 2], flat[:, 3].exp())
        return viewmats, Ks.repeat_interleave(H, 0)

    def _check_render_inputs(self, volume, features, params: Tensor, Ks: Tensor, size) -> None:
        """Raise the error :meth:`_score` of [B, H, 4] hypotheses would raise, without rendering."""
        h, w = size
        viewmats, Ks = self._cameras(params, Ks)  # pose_to_viewmat checks the poses
        check_raster_inputs(volume, features, viewmats, Ks, w, h)

    def _score(self, volume, features, params: Tensor, Ks: Tensor, fmap: Tensor, bg: Tensor, size, per_cell=False):
        """[B, H] scores of [B, H, 4] hypotheses (one render call for all); with ``per_cell`` the
        [B, H, h, w] terms they are the means of."""
        B, H, _ = params.shape
        rendered = self._render(volume, features, *self._cameras(params, Ks), size)
        rendered = rendered.view(B, H, *rendered.shape[1:])  # [B, H, h, w, D]
        terms = compare_cells if per_cell else compare
        return terms(rendered, fmap[:, None], bg[:, None], self.cfg.temperature)
