"""The switch for value checks: on by default, off where a hot loop has validated its inputs once.

A check of tensor values (finite, positive, in range, camera on axis) reduces the tensor and reads
the answer on the host; on a GPU that waits for every queued kernel. Called in a loop the waits
add up: the pose estimator's 30 refinement steps made 11 each before it switched them off. Shape, dtype and
device checks read only metadata and always run. Like kornia's ``KORNIA_CHECKS``, the environment
variable ``RENDERING_CHECKS=0`` (or ``false``, ``off``, ``no``) turns value checks off at import.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Iterator
from contextlib import contextmanager

_OFF = ("0", "false", "off", "no")

# A context variable rather than a module global: ``value_checks(False)`` in one thread (or asyncio
# task) leaves checks on in the others, and each new thread starts from the import-time default.
# Its reset token restores the previous value exactly, nested blocks included.
_enabled: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "rendering_value_checks", default=os.environ.get("RENDERING_CHECKS", "1").strip().lower() not in _OFF
)


def checks_enabled() -> bool:
    """Whether ``rendering`` checks tensor values (each such check is a host sync on the GPU).

    Example:
        >>> checks_enabled()  # on unless RENDERING_CHECKS=0 was set at import
        True
    """
    return _enabled.get()


@contextmanager
def value_checks(enabled: bool) -> Iterator[None]:
    """Turn value checks on or off inside a ``with`` block; the previous setting comes back on exit,
    also when the block raises. Use it around a loop whose inputs were checked once before it.

    Example:
        >>> from rendering import pose_to_viewmat
        >>> pose_to_viewmat(0.0, 0.0, 0.0, -5.0)
        Traceback (most recent call last):
        ...
        ValueError: distance: must be > 0, got [-5.0]
        >>> with value_checks(False):  # no check: nothing waits for the GPU
        ...     pose_to_viewmat(0.0, 0.0, 0.0, -5.0).shape
        torch.Size([1, 4, 4])
        >>> checks_enabled()
        True
    """
    token = _enabled.set(bool(enabled))
    try:
        yield
    finally:
        _enabled.reset(token)
