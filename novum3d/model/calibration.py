"""Class probabilities that mean something: a softmax temperature fitted on held-out scores, and ECE.

NOVUM's class scores are mean cosine similarities, all within a few hundredths of each other; a
softmax at the training temperature spreads the mass over every class (a photograph of a
motorbike got p = 0.12 with every class between 0.07 and 0.12). One scalar temperature fitted by
minimising the negative log-likelihood on the validation split (Guo et al., ICML 2017) keeps the
ranking and makes the top probability an honest estimate of accuracy.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_TEMPERATURE = 0.07  # the contrastive loss's temperature: the scale scores were trained at


def fit_temperature(scores: Tensor, labels: Tensor, init: float = DEFAULT_TEMPERATURE) -> float:
    """The T minimising the mean NLL of ``softmax(scores / T)`` over held-out images.

    Args:
        scores: [N, Y] class scores (or logits); labels: [N] true classes.

    Returns:
        T > 0 (``init`` when there are no scores).

    Example:
        >>> scores = torch.tensor([[0.50, 0.40], [0.45, 0.50], [0.60, 0.30]])
        >>> round(fit_temperature(scores, torch.tensor([0, 1, 0])), 3) < 0.07  # sharper than training's
        True
    """
    if scores.shape[0] == 0:
        return init
    scores, labels = scores.detach().double().cpu(), labels.detach().long().cpu()
    log_t = torch.tensor(math.log(init), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def nll() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(scores / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(nll)
    t = float(log_t.detach().exp())
    return t if math.isfinite(t) and t > 0 else init


def expected_calibration_error(confidence: Tensor, correct: Tensor, bins: int = 15) -> float:
    """ECE: sum over equal-width confidence bins of (share of images) x |accuracy - mean confidence|.

    Args:
        confidence: [N] top-class probability; correct: [N] bool, the top class is the true one.

    Example:
        >>> confidence, correct = torch.tensor([0.9, 0.9, 0.6, 0.6]), torch.tensor([True, True, True, False])
        >>> ece = expected_calibration_error(confidence, correct)
        >>> round(ece, 6)  # half the images 0.1 over-sure, half 0.1 under-sure
        0.1
    """
    if confidence.numel() == 0:
        return float("nan")
    confidence, correct = confidence.double().cpu(), correct.double().cpu()
    which = (confidence * bins).long().clamp(0, bins - 1)
    total = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, torch.ones_like(confidence))
    acc = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, correct)
    conf = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, confidence)
    used = total > 0
    gap = (acc[used] - conf[used]).abs()  # per-bin |sum correct - sum confidence|
    return float(gap.sum() / confidence.numel())
