"""Neural object volumes of all classes and the background bank, as buffers of one module."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rendering import GaussianVolume

Reduce = Callable[[Tensor], Tensor]  # e.g. an all-reduce (sum) across ranks


class NeuralVolumes(nn.Module):
    """Y classes of up to K Gaussians with fixed geometry and learned unit features C [Y, K, D].

    Classes with fewer Gaussians are padded; ``valid`` [Y, K] marks real ones. The features are
    not parameters: they follow the backbone by momentum (:meth:`momentum_update`). The
    background bank [M, D] is a FIFO of features sampled off the objects (:meth:`enqueue_background`).
    """

    def __init__(self, volumes: dict[str, GaussianVolume], feature_dim: int, bank_size: int, seed: int = 0):
        super().__init__()
        if not volumes:
            raise ValueError("volumes: need at least one class")
        self.classes = list(volumes)
        Y, K = len(volumes), max(len(v) for v in volumes.values())
        g = torch.Generator().manual_seed(seed)
        geometry = {"means": (3, 0.0), "scales": (3, 1.0), "quats": (4, 0.0), "opacities": (None, 0.0)}
        for name, (width, fill) in geometry.items():
            shape = (Y, K) if width is None else (Y, K, width)
            t = torch.full(shape, fill)
            for y, vol in enumerate(volumes.values()):
                t[y, : len(vol)] = getattr(vol, name).float()
            self.register_buffer(name, t)
        self.register_buffer(
            "valid", torch.arange(K)[None, :] < torch.tensor([len(v) for v in volumes.values()])[:, None]
        )
        self.register_buffer("spacing", torch.tensor([v.spacing for v in volumes.values()]))
        self.register_buffer("features", F.normalize(torch.randn(Y, K, feature_dim, generator=g), dim=-1))
        self.register_buffer("bank", F.normalize(torch.randn(bank_size, feature_dim, generator=g), dim=-1))
        self.register_buffer("bank_ptr", torch.zeros((), dtype=torch.long))

    @staticmethod
    def stored_geometry(
        state: dict[str, Tensor], classes: list[str], prefix: str = "volumes."
    ) -> dict[str, GaussianVolume]:
        """The geometry a state dict of these volumes holds, class by class (padding dropped): how a model whose
        Gaussians are not built from its config (``volume.kind: points``) is rebuilt. A missing or misshapen entry
        raises KeyError or ValueError naming it."""
        names = ("means", "scales", "quats", "opacities", "valid", "spacing")
        t = {n: state[prefix + n] for n in names}
        Y = len(classes)
        if t["valid"].dim() != 2 or t["valid"].shape[0] != Y or t["spacing"].shape != (Y,):
            raise ValueError(f"{prefix}valid / spacing: expected [{Y}, K] and [{Y}] for {Y} classes, "
                             f"got {tuple(t['valid'].shape)} and {tuple(t['spacing'].shape)}")  # fmt: skip
        out = {}
        for y, name in enumerate(classes):
            k = int(t["valid"][y].sum())
            if k < 1 or not bool(t["valid"][y, :k].all()):
                raise ValueError(f"{prefix}valid[{y}]: expected the class's Gaussians first, then padding")
            out[name] = GaussianVolume(t["means"][y, :k].float(), t["scales"][y, :k].float(),
                                       t["quats"][y, :k].float(), t["opacities"][y, :k].float(),
                                       float(t["spacing"][y]))  # fmt: skip
        return out

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def count(self, y: int) -> int:
        return int(self.valid[y].sum())

    def volume(self, y: int) -> GaussianVolume:
        """The geometry of class ``y`` (no padding)."""
        k = self.count(y)
        return GaussianVolume(
            self.means[y, :k],
            self.scales[y, :k],
            self.quats[y, :k],
            self.opacities[y, :k],
            float(self.spacing[y]),
        )

    def neighbor_mask(self, radius: float) -> Tensor:
        """[Y, K, K] bool: pairs of distinct Gaussians of one class closer than radius * spacing."""
        dist = torch.cdist(self.means, self.means)
        near = dist < radius * self.spacing[:, None, None]
        eye = torch.eye(self.means.shape[1], dtype=torch.bool, device=near.device)
        return near & ~eye & self.valid[:, :, None] & self.valid[:, None, :]

    @torch.no_grad()
    def momentum_update(
        self,
        class_ids: Tensor,
        gauss_ids: Tensor,
        feats: Tensor,
        momentum: float,
        reduce: Reduce | None = None,
    ) -> None:
        """``C_k <- normalise(m C_k + (1 - m) mean f_k)`` for every Gaussian seen in the batch.

        Args:
            class_ids, gauss_ids: [P] of the correspondences; feats: [P, D] sampled features.
            reduce: sums the per-Gaussian sums and counts across ranks (DDP), so all ranks agree.
        """
        Y, K, D = self.features.shape
        flat = class_ids * K + gauss_ids
        sums = torch.zeros(Y * K, D, device=feats.device, dtype=torch.float32).index_add_(0, flat, feats.float())
        counts = torch.zeros(Y * K, device=feats.device, dtype=torch.float32).index_add_(
            0, flat, torch.ones_like(flat, dtype=torch.float32)
        )
        if reduce is not None:
            sums, counts = reduce(sums), reduce(counts)
        # Dense over all Y x K Gaussians, then kept where seen: indexing by ``counts > 0`` made the
        # host wait for the GPU every step, and the dense rows cost 7 MB of traffic at 12 x 1100 x 128.
        current = self.features.view(Y * K, D)
        mean = sums / counts.clamp(min=1)[:, None]
        updated = F.normalize(momentum * current + (1 - momentum) * mean, dim=-1)
        current.copy_(torch.where((counts > 0)[:, None], updated, current))

    @torch.no_grad()
    def enqueue_background(self, feats: Tensor) -> None:
        """Write features [Q, D] into the bank, oldest first (FIFO ring)."""
        M = self.bank.shape[0]
        if M == 0 or feats.shape[0] == 0:
            return
        feats = F.normalize(feats.float(), dim=-1)[-M:]
        idx = (self.bank_ptr + torch.arange(feats.shape[0], device=feats.device)) % M
        self.bank[idx] = feats
        self.bank_ptr.copy_((self.bank_ptr + feats.shape[0]) % M)
