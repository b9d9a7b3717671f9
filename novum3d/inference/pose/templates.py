"""Pre-rendered pose templates: rendered once per (class, focal, map size, grid), kept, and scored by products.

Templates are pixel-major, ``[P, F*T, C]`` (P = h*w pixels, F distances x T orientations, C channels), so
scoring B images against all of them is one batched product per chunk of pixels and no render.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator

import torch
from torch import Tensor

from rendering import GaussianVolume, pose_to_viewmat

from ...model.matching import object_or_background
from .grid import SearchGrid, template_poses

# (volume, features [N, C], viewmats [V, 4, 4], Ks [V, 3, 3], (h, w)) -> renders [V, h, w, C]
Renderer = Callable[[GaussianVolume, Tensor, Tensor, Tensor, tuple[int, int]], Tensor]


def tensor_identity(t: Tensor) -> tuple:
    """Which memory ``t`` reads, its layout and its in-place version: part of a template cache key, so
    that another volume or features under the same class key, or features changed in place, are
    rendered anew (a benchmark looping over volume sizes once reused a smaller volume's templates),
    while a fresh view of the same features (``features[c, :k]``) still hits. No device sync. It names
    memory, not contents: a new tensor of the same shape allocated where a freed one lay would hit."""
    return t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype, t._version


def point_features(volume: GaussianVolume) -> Tensor:
    """[N, 4] (x, y, z, 1): rendered, the alpha-weighted surface point and the alpha."""
    means = volume.means.float()
    return torch.cat([means, torch.ones_like(means[:, :1])], 1)


@torch.no_grad()
def render_templates(
    render: Renderer,
    volume: GaussianVolume,
    features: Tensor,
    K: Tensor,
    size: tuple[int, int],
    grid: SearchGrid,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """The grid rendered with intrinsics K [3, 3]: ([T, 3] poses, [h*w, F*T, C] renders in ``dtype``,
    pixel-major and distance-major: column ``f * T + t`` is orientation t at ``grid.distances[f]``)."""
    poses = template_poses(grid, features.device)
    T, (h, w) = len(poses), size
    renders = []
    for d in grid.distances:
        dist = torch.full((T,), d, device=features.device)
        viewmats = pose_to_viewmat(poses[:, 0], poses[:, 1], poses[:, 2], dist)
        r = render(volume, features, viewmats, K.expand(T, 3, 3), size)
        renders.append(r.reshape(T, h * w, -1).to(dtype))
    return poses, torch.cat(renders, 0).transpose(0, 1).contiguous()


class TemplateCache:
    """Template sets by key, the least recently used dropped first beyond ``max_entries``."""

    def __init__(self, max_entries: int = 16):
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[Tensor, Tensor]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._entries)

    def get(self, key: Hashable) -> tuple[Tensor, Tensor] | None:
        if key not in self._entries:
            return None
        self._entries.move_to_end(key)
        return self._entries[key]

    def put(self, key: Hashable, value: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        self._entries[key] = value
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value


def template_chunk(renders: Tensor, images: int) -> int:
    """Pixels of pixel-major templates [P, F*T, C] scored at once against ``images`` images: about 2^26
    (CUDA) or 2^22 (CPU) products of a template column and an image per chunk, bounding memory."""
    budget = (1 << 26) if renders.is_cuda else (1 << 22)
    return max(1, budget // max(renders.shape[1] * images, 1))


def score_templates(renders: Tensor, features: Tensor, background: Tensor, temperature: float = 0.0) -> Tensor:
    """[B, F*T] scores of centred images against pixel-major templates (:func:`~.objective.compare`'s rule).

    Args:
        renders: [P, F*T, D] (P = h*w); features: [B, h, w, D]; background: [B, h, w].
    """
    B = features.shape[0]
    P, TT, D = renders.shape
    f = features.reshape(B, P, D).permute(1, 2, 0).to(renders.dtype)  # [P, D, B]
    bg = background.reshape(B, P).t()[:, None, :].float()  # [P, 1, B]
    chunk = template_chunk(renders, B)
    total = torch.zeros(TT, B, device=renders.device)
    for s in range(0, P, chunk):
        obj = torch.bmm(renders[s : s + chunk], f[s : s + chunk]).float()  # [p, F*T, B]
        total += object_or_background(obj, bg[s : s + chunk], temperature).sum(0)
    return (total / P).t()


def score_template_inliers(renders: Tensor, points: Tensor, matched: Tensor, radius: float) -> Tensor:
    """[B, F*T] :func:`~.objective.count_inliers` of centred images against pixel-major point templates, as
    one product per chunk of pixels (``|q - x|^2 = |q|^2 - 2 q.x + |x|^2``).

    Args:
        renders: [P, F*T, 4] composited (x, y, z, 1) (P = h*w); points: [B, h, w, 3];
        matched: [B, h, w] bool; radius: object units.
    """
    B = points.shape[0]
    P, TT, _ = renders.shape
    x = points.reshape(B, P, 3).permute(1, 2, 0).float()  # [P, 3, B]
    x2 = x.square().sum(1, keepdim=True)  # [P, 1, B]
    ok = matched.reshape(B, P).t()[:, None, :]  # [P, 1, B]
    chunk = template_chunk(renders, B)
    total = torch.zeros(TT, B, device=renders.device)
    for s in range(0, P, chunk):
        r = renders[s : s + chunk].float()
        alpha = r[..., 3]
        q = r[..., :3] / alpha.clamp_min(1e-6)[..., None]  # [p, F*T, 3]
        d2 = q.square().sum(-1, keepdim=True) - 2 * torch.bmm(q, x[s : s + chunk]) + x2[s : s + chunk]
        total += ((d2 < radius**2) & ok[s : s + chunk] & (alpha > 0.5)[..., None]).sum(0)
    return (total / P).t()
