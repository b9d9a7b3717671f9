"""One error family for everything a user hands the toolkit: configs, data, checkpoints, caches.

Every script catches :class:`Novum3DError` in one place (:func:`novum3d.cli.command`) and
prints a single ``error: ...`` line that names the file, the field and the fix, then exits 2.
Bugs (anything else) keep their tracebacks.

Example:
    >>> try:
    ...     raise AnnotationError("missing field(s) ['azimuth']", path="a/car_1.npz", field="azimuth")
    ... except Novum3DError as exc:
    ...     print(exc, "|", exc.field)
    a/car_1.npz: missing field(s) ['azimuth'] | azimuth
"""

from __future__ import annotations

import re
from pathlib import Path

# DataLoader workers re-raise an exception as ``type(msg)`` with the worker's traceback in ``msg``:
# the last line of that traceback is the original "module.Class: message".
_WORKER = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback", re.MULTILINE)


class Novum3DError(Exception):
    """A user input (file, field, flag) cannot be used; ``str(exc)`` is one line saying what to do.

    Args:
        message: what is wrong and how to fix it. When ``path`` is given and the message does not
            start with it, the path is prefixed.
        path: the file or folder at fault, if any.
        field: the key, field or flag at fault, if any.
    """

    def __init__(self, message: str = "", path: str | Path | None = None, field: str | None = None):
        message = str(message)
        self.worker_traceback: str | None = None
        if _WORKER.search(message):
            self.worker_traceback = message
            last = message.rstrip().splitlines()[-1]
            message = last.split(": ", 1)[1] if ": " in last else last
        if path is not None and not message.startswith(str(path)):
            message = f"{path}: {message}"
        # One line: scripts print it after "error: ".
        message = "; ".join(part.strip() for part in message.splitlines() if part.strip())
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.field = field

    def __reduce__(self):  # keep path and field through pickling (DataLoader workers, DDP)
        return (type(self), (str(self), self.path, self.field))


class ConfigError(Novum3DError, ValueError):
    """A config file, mapping or override does not fit its dataclass; names file and key."""


class DataError(Novum3DError, ValueError):
    """A file of a data set cannot be used; names it and what is wrong."""


class AnnotationError(DataError):
    """A malformed annotation; names the file and the field."""


class MissingDataError(DataError):
    """The configured data is not there; says how to get it."""


class CheckpointError(Novum3DError, RuntimeError):
    """A checkpoint cannot be read, written or used; names the file and what to do."""


class WeightsError(CheckpointError, ValueError):
    """A weights file (``model.backbone_weights``, ``model.weights``) does not fit the network."""


class CacheError(Novum3DError, RuntimeError):
    """A cache was made from other inputs than the ones given now; names what differs and the flag that overwrites."""


__all__ = [
    "AnnotationError",
    "CacheError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "MissingDataError",
    "Novum3DError",
    "WeightsError",
]
