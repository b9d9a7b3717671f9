"""NOVUM's contrastive loss: InfoNCE over all Gaussians of all classes and the background bank."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import LossConfig


def contrastive_loss(
    feats: Tensor,
    class_ids: Tensor,
    gauss_ids: Tensor,
    volume_features: Tensor,
    valid: Tensor,
    neighbors: Tensor,
    bank: Tensor,
    cfg: LossConfig,
) -> Tensor:
    """Mean InfoNCE: each feature must match its own Gaussian better than the negatives.

    Negatives: (i) Gaussians of the same class that are not its neighbours, (ii) all Gaussians of
    other classes, (iii) the background bank; each group can be switched off in ``cfg``.

    One product against the Gaussians and the bank together, one bias row for padded Gaussians and
    the bank weight, and the neighbours written into each row's own-class block only. The plain form
    (:func:`contrastive_loss_reference`) builds three [P, Y, K] masks and concatenates the bank's
    logits; this one gives the same loss and gradient.

    Args:
        feats: [P, D] unit features at visible Gaussians (the only tensor with gradients).
        class_ids, gauss_ids: [P] the corresponding Gaussian.
        volume_features: [Y, K, D]; valid: [Y, K] bool; neighbors: [Y, K, K] bool; bank: [M, D].
    """
    if not (cfg.same_class_negatives and cfg.other_class_negatives):
        return contrastive_loss_reference(
            feats, class_ids, gauss_ids, volume_features, valid, neighbors, bank, cfg
        )  # ablations only: the plain form
    Y, K, D = volume_features.shape
    P = feats.shape[0]
    if P == 0:
        return feats.sum() * 0.0
    keys = volume_features.reshape(Y * K, D)
    bias = torch.zeros(Y * K, device=feats.device, dtype=torch.float32).masked_fill(~valid.reshape(-1), float("-inf"))
    if cfg.background_negatives and bank.shape[0] > 0:
        keys = torch.cat([keys, bank])
        bias = torch.cat([bias, bias.new_full((bank.shape[0],), math.log(cfg.bank_weight))])
    logits = (feats @ keys.detach().to(feats.dtype).T).float() / cfg.temperature + bias
    # Each row's own-class block is K consecutive columns: its neighbours leave the softmax, the
    # positive stays.
    rows = torch.arange(P, device=feats.device)
    near = neighbors[class_ids, gauss_ids].clone()  # [P, K]
    near[rows, gauss_ids] = False
    block = class_ids[:, None] * K + torch.arange(K, device=feats.device)  # [P, K] columns
    logits = logits.scatter(1, block, logits.gather(1, block).masked_fill(near, float("-inf")))
    return F.cross_entropy(logits, class_ids * K + gauss_ids)


def contrastive_loss_reference(
    feats: Tensor,
    class_ids: Tensor,
    gauss_ids: Tensor,
    volume_features: Tensor,
    valid: Tensor,
    neighbors: Tensor,
    bank: Tensor,
    cfg: LossConfig,
) -> Tensor:
    """:func:`contrastive_loss` written plainly, with a [P, Y, K] mask per negative group: the
    reference the tests compare the fast form against.

    Mean InfoNCE: each feature must match its own Gaussian better than the negatives.

    Negatives: (i) Gaussians of the same class that are not its neighbours, (ii) all Gaussians of
    other classes, (iii) the background bank; each group can be switched off in ``cfg``.

    Args:
        feats: [P, D] unit features at visible Gaussians (the only tensor with gradients).
        class_ids, gauss_ids: [P] the corresponding Gaussian.
        volume_features: [Y, K, D]; valid: [Y, K] bool; neighbors: [Y, K, K] bool; bank: [M, D].
    """
    Y, K, D = volume_features.shape
    P = feats.shape[0]
    if P == 0:
        return feats.sum() * 0.0
    target = class_ids * K + gauss_ids
    logits = feats @ volume_features.reshape(Y * K, D).detach().to(feats.dtype).T / cfg.temperature
    rows = torch.arange(P, device=feats.device)
    excluded = ~valid.reshape(1, Y * K).expand(P, -1).clone()
    same_class = torch.zeros(P, Y, K, dtype=torch.bool, device=feats.device)
    same_class[rows, class_ids] = True
    same_class = same_class.reshape(P, Y * K)
    near = torch.zeros(P, Y, K, dtype=torch.bool, device=feats.device)
    near[rows, class_ids] = neighbors[class_ids, gauss_ids]
    excluded |= near.reshape(P, Y * K)
    if not cfg.same_class_negatives:
        excluded |= same_class
    if not cfg.other_class_negatives:
        excluded |= ~same_class
    excluded[rows, target] = False  # the positive always stays
    logits = logits.masked_fill(excluded, float("-inf"))
    if cfg.background_negatives and bank.shape[0] > 0:
        bank_logits = feats @ bank.detach().to(feats.dtype).T / cfg.temperature
        if cfg.bank_weight != 1:  # weight each bank term of the softmax denominator
            bank_logits = bank_logits + math.log(cfg.bank_weight)
        logits = torch.cat([logits, bank_logits], dim=1)
    return F.cross_entropy(logits.float(), target)


def clutter_loss(background: Tensor, volume_features: Tensor, valid: Tensor) -> Tensor:
    """``mean(f_bg . C_k)`` over background features and every real Gaussian of every class.

    Minimising it pushes clutter and occluder features away from all object parts. As the mean of
    dot products equals the dot product with the mean Gaussian feature, it costs one product.

    Args:
        background: [Q, D] unit features at background cells (with gradients).
        volume_features: [Y, K, D] (no gradient); valid: [Y, K] bool.

    Returns:
        A scalar (0 when there is no background feature).
    """
    if background.shape[0] == 0:
        return background.sum() * 0.0
    mean_feature = volume_features[valid].detach().float().mean(0)  # [D]
    return (background.float() @ mean_feature).mean()
