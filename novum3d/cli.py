"""What every command-line front end shares: one error line and exit code 2 for bad input (devices:
:mod:`novum3d.device`)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from .errors import Novum3DError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def command(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a script's ``main``: a :class:`Novum3DError` becomes one ``error: ...`` line on stderr and
    exit code 2; Ctrl-C a short line and 130 (caches and checkpoints keep what was finished)."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except Novum3DError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:
            print("interrupted: run the same command again to continue from what was saved", file=sys.stderr)
            return EXIT_INTERRUPTED

    return wrapped
