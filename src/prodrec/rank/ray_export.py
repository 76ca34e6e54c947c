"""Export blocks ranked on a Ray cluster: ``prodrec export --engine ray``.

The driver (the process running ``prodrec export``) puts the :class:`~prodrec.rank.lists.ListRanker` - the
recommender's vectors, any approximate index, the bound rules - in Ray's object store once, and submits one
task per block of queries (a few per worker at a time, so memory stays bounded); each result is written as
a checkpoint by the driver as it comes back, in whatever order, so a killed run resumes as the local engine
does. Workers compute the same pairwise scores as the local engine, so the table is the same, row for row.

Where Ray runs (``address``) is as for ``prodrec embed --engine ray`` (see
:mod:`prodrec.embed.ray_engine`): none starts a local Ray, ``auto`` or ``ray://host:10001`` connects to a
cluster whose workers have the same ``prodrec`` installed. Ray is imported only when a run starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..embed.ray_engine import start_ray
from .lists import ListRanker, Lists

__all__ = ["ray_runner"]

#: Blocks in flight per worker (one computing, one waiting), which bounds the driver's memory.
IN_FLIGHT = 2

Runner = Callable[[ListRanker, Sequence[tuple[int, np.ndarray]]], Iterator[tuple[int, dict[str, Lists]]]]


def rank_block(ranker: ListRanker, query_pos: np.ndarray) -> dict[str, Lists]:
    """What a Ray task runs: one block's lists."""
    return ranker.rank(query_pos)


def ray_runner(*, info: dict[str, Any], address: str | None = None, workers: int | None = None,
               gpus_per_worker: float = 0.0) -> Runner:
    """A runner that ranks blocks on Ray; ``info["ray"]`` gets the cluster's address, version and workers."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"--workers must be a positive integer, got {workers!r}")
    if gpus_per_worker:
        raise ConfigError("export ranks on CPUs (one matrix product per block): drop --gpus-per-worker")

    def run(ranker: ListRanker, blocks: Sequence[tuple[int, np.ndarray]]) -> Iterator[tuple[int, dict[str, Lists]]]:
        if not blocks:
            return
        levels: dict[str, int] = {}
        ray, started, ray_info = start_ray(address, levels)
        try:
            n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
            info["ray"] = {**ray_info, "workers": n}
            shared = ray.put(ranker)
            task = ray.remote(num_cpus=1)(rank_block)
            todo = list(blocks)
            pending: dict[Any, int] = {}
            while todo or pending:
                while todo and len(pending) < IN_FLIGHT * n:
                    b, qpos = todo.pop(0)
                    pending[task.remote(shared, qpos)] = b
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    yield pending.pop(ref), ray.get(ref)
        finally:
            if started and ray.is_initialized():
                ray.shutdown()
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)

    return run
