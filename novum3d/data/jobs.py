"""Deterministic jobs for the data generators: a seed per job from its place, and a parallel map.

Every image is a job whose random stream depends only on the data set's seed and the job's key
(its place in the data set), so the bytes written do not depend on how many processes run the
jobs or in what order they finish.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from multiprocessing import get_context
from typing import Any

import numpy as np


def keyed_rng(seed: int, key: str) -> np.random.Generator:
    """The random stream of the job ``key`` in a data set made with ``seed``: SeedSequence([seed, crc32(key)])."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(key.encode())]))


def map_jobs(
    fn: Callable[[Any], Any],
    args: Sequence[Any],
    workers: int = 1,
    progress: Callable[[Iterator, int], Iterator] | None = None,
    chunksize: int = 4,
    ordered: bool = True,
) -> list[Any]:
    """``[fn(a) for a in args]`` over ``workers`` spawned processes (in this process when 1).

    Args:
        fn: a module-level function (spawned workers import it).
        progress: wraps the result iterator, e.g. ``lambda it, n: tqdm(it, total=n)``.
        ordered: results in the order of ``args``; False: as they finish (the faster when jobs vary).
    """
    if workers > 1:
        with get_context("spawn").Pool(workers) as pool:
            results = (pool.imap if ordered else pool.imap_unordered)(fn, args, chunksize=chunksize)
            return list(progress(results, len(args)) if progress else results)
    results = map(fn, args)
    return list(progress(results, len(args)) if progress else results)
