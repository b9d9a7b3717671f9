"""Pre-rendered pose templates: rendered once per (class, focal, map size, grid), kept, and scored by products.

Templates are pixel-major, ``[P, F*T, C]`` (P = h*w pixels, F distances x T orientations, C channels), so
scoring B images against all of them is one batched product per chunk of pixels and no render. A
:class:`TemplateStore` keeps them on disk between runs, keyed by everything they were made from.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any

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
    views_per_call: int = 64,
) -> tuple[Tensor, Tensor]:
    """The grid rendered with intrinsics K [3, 3]: ([T, 3] poses, [h*w, F*T, C] renders in ``dtype``,
    pixel-major and distance-major: column ``f * T + t`` is orientation t at ``grid.distances[f]``).

    Rendered ``views_per_call`` views at a time into the one output, so that the peak memory is the
    templates plus one call's renders (rendering all, then transposing, held three copies: 1.1 GB for
    684 views of 32 x 32 x 128 in float32).
    """
    poses = template_poses(grid, features.device)
    T, (h, w) = len(poses), size
    out = None
    for f, d in enumerate(grid.distances):
        for s in range(0, T, views_per_call):
            p = poses[s : s + views_per_call]
            dist = torch.full((len(p),), d, device=features.device)
            viewmats = pose_to_viewmat(p[:, 0], p[:, 1], p[:, 2], dist)
            r = render(volume, features, viewmats, K.expand(len(p), 3, 3), size).reshape(len(p), h * w, -1)
            if out is None:
                out = torch.empty(h * w, len(grid.distances) * T, r.shape[-1], dtype=dtype, device=r.device)
            out[:, f * T + s : f * T + s + len(p)] = r.transpose(0, 1)
    return poses, out


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


# What torch.load raises for a file that is truncated, overwritten or not ours.
_UNREADABLE = (RuntimeError, OSError, EOFError, ValueError, KeyError, TypeError, pickle.UnpicklingError,
               zipfile.BadZipFile)  # fmt: skip
# Bump when the file layout or the meaning of a key part changes.
TEMPLATE_FORMAT = 1
# What a template's values depend on besides its key's data: the renderer and this package's grid and layout.
_SOURCES = ("rendering",)
_MODULES = ("grid.py", "templates.py")


@functools.cache
def template_code_digest() -> str:
    """sha256 of the sources that compute templates: the ``rendering`` package and the pose grid and
    template modules (a narrower digest than :func:`novum3d.fingerprint.code_digest`, so that an edit
    elsewhere in novum3d leaves cached templates valid)."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    top = here.parents[2]
    files = [f for package in _SOURCES for f in sorted((top / package).rglob("*.py"))]
    files += [here / name for name in _MODULES]
    for path in files:
        h.update(str(path.relative_to(top)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def tensor_digest(*tensors: Tensor) -> str:
    """sha256 over the dtype, shape and bytes of each tensor (copied to the host)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().contiguous().cpu()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def template_key(
    class_name: str,
    kind: str,
    volume: GaussianVolume,
    features: Tensor,
    K: Tensor,
    size: tuple[int, int],
    grid: SearchGrid,
    dtype: torch.dtype,
    device: torch.device,
    backend: str,
) -> dict[str, Any]:
    """The persistent key of one template set: every input its values depend on, as JSON values
    (the store adds the format, the code and the checkpoint)."""
    v = volume
    return {
        "class": str(class_name),
        "kind": kind,
        "volume": tensor_digest(v.means, v.quats, v.scales, v.opacities, features),
        "size": [int(size[0]), int(size[1])],
        "K": [round(float(x), 6) for x in K.reshape(9).tolist()],
        "grid": {
            "azimuth_bins": grid.azimuth_bins,
            "blocks": [[list(e), list(t)] for e, t in grid.blocks],
            "distances": list(grid.distances),
        },
        "dtype": str(dtype).removeprefix("torch."),
        "device": torch.device(device).type,
        "backend": backend,
    }


class TemplateStore:
    """Template sets on disk, one file per key: ``<folder>/<class>-<kind>-<digest of the key>.pt`` holding
    the key beside the poses and renders.

    A file is used only when the key it holds equals the one asked for: the template format, the
    digest of the code that renders templates (:func:`template_code_digest`), the checkpoint's digest
    and everything :func:`template_key` lists. A file made from other inputs, or one that does not load,
    is never used: the templates are rendered again and replace it, and ``warn`` says so once per
    reason. Files are written to a temporary name and renamed, so an interrupted write leaves no
    partial file under a key's name. On the CPU files load memory-mapped: pages are read as the
    templates are scored, and the system can drop them again under memory pressure.

    Args:
        folder: where the files live (created on the first save).
        checkpoint: sha256 of the checkpoint the volumes come from (:func:`novum3d.checkpoint.file_digest`).
        warn: called with one line when a file is unusable or cannot be written.
    """

    def __init__(self, folder: str | Path, checkpoint: str, warn: Callable[[str], None] | None = None):
        self.folder = Path(folder)
        self.provenance = {"format": TEMPLATE_FORMAT, "code": template_code_digest(), "checkpoint": checkpoint}
        self._warn = warn
        self._said: set[str] = set()
        self.writable = True
        self.stats = {"loaded": 0, "saved": 0, "rejected": 0}

    def _say(self, reason: str, line: str) -> None:
        if reason not in self._said and self._warn is not None:
            self._said.add(reason)
            self._warn(line)

    def full_key(self, key: dict[str, Any]) -> dict[str, Any]:
        return json.loads(json.dumps({**self.provenance, **key}))

    def path(self, key: dict[str, Any]) -> Path:
        full = self.full_key(key)
        digest = hashlib.sha256(json.dumps(full, sort_keys=True).encode()).hexdigest()[:24]
        slug = "-".join("".join(c if c.isalnum() or c in "_." else "_" for c in str(key[k])) for k in ("class", "kind"))
        return self.folder / f"{slug}-{digest}.pt"

    def load(self, key: dict[str, Any], device: torch.device | str) -> tuple[Tensor, Tensor] | None:
        """(poses, renders) saved under ``key`` on ``device``, or None (no file, or one that is not usable)."""
        path = self.path(key)
        if not path.is_file():
            return None
        device = torch.device(device)
        try:
            saved = torch.load(path, map_location="cpu", mmap=device.type == "cpu", weights_only=True)
            ok = isinstance(saved, dict) and saved.get("key") == self.full_key(key)
            poses, renders = (saved["poses"], saved["renders"]) if ok else (None, None)
        except _UNREADABLE as exc:
            self.stats["rejected"] += 1
            self._say("corrupt", f"template cache: {path} does not load ({type(exc).__name__}); rendering anew")
            return None
        if not ok or not (isinstance(poses, Tensor) and isinstance(renders, Tensor)):
            self.stats["rejected"] += 1
            self._say("foreign", f"template cache: {path} was made from other inputs; rendering anew")
            return None
        self.stats["loaded"] += 1
        return poses.to(device), renders.to(device)

    def save(self, key: dict[str, Any], poses: Tensor, renders: Tensor) -> tuple[Tensor, Tensor]:
        """Write (poses, renders) under ``key``; returns them, memory-mapped from the file on the CPU."""
        if not self.writable:
            return poses, renders
        path = self.path(key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            torch.save({"key": self.full_key(key), "poses": poses.cpu(), "renders": renders.cpu()}, tmp)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            self.writable = False
            self._say("write", f"template cache: cannot write to {self.folder} ({exc}); templates stay in memory")
            return poses, renders
        self.stats["saved"] += 1
        self._prune(path, key)
        if renders.device.type == "cpu":  # the file's pages instead of a private copy: reclaimable memory
            reloaded = self.load(key, "cpu")
            if reloaded is not None:
                self.stats["loaded"] -= 1
                return reloaded
        return poses, renders

    def _prune(self, kept: Path, key: dict[str, Any]) -> None:
        """Delete this key's earlier versions: files of the same class and kind, made from the same inputs
        by another format, code or checkpoint (templates of other sizes or grids stay)."""
        prefix = kept.name.rsplit("-", 1)[0] + "-"
        for other in self.folder.glob(f"{prefix}*.pt"):
            if other == kept:
                continue
            try:
                saved = torch.load(other, map_location="cpu", mmap=True, weights_only=True)["key"]
            except _UNREADABLE:  # a file of ours that does not load holds nothing to keep
                saved = None
            saved = saved if isinstance(saved, dict) else None
            if saved is None or all(saved.get(k) == v for k, v in json.loads(json.dumps(key)).items()):
                other.unlink(missing_ok=True)
