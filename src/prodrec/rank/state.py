"""The state folder beside an exported table (``<table>.state/``): checkpoints and what an update reads.

* ``plan.json``: the export's settings, a fingerprint of the products, the block size, whether the table was
  written, and the token that ties the folder to the table's provenance;
* ``products.npz``: every ranked product's id and fingerprint (:func:`product_fingerprints`: its vectors and
  the catalog columns the rules and captions read), and the query ids asked for;
* ``block-NNNNNN.npz``: one block of queries' lists per mode (positions, scores, each arm's cosine, the
  threshold a product needs to enter the list), written atomically when the block is done.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..core.errors import ConfigError
from ..core.io import atomic_write, read_json_object
from .lists import Lists

if TYPE_CHECKING:
    from .recommender import Recommender

__all__ = ["STATE_VERSION", "block_path", "load_block", "load_products", "product_fingerprints", "read_plan",
           "save_block", "save_products", "state_dir"]

#: Version of the state folder's layout.
STATE_VERSION = 1


def state_dir(table: str | os.PathLike[str]) -> Path:
    """The folder beside a table that holds its checkpoints and the state an update reads."""
    p = Path(table)
    return p.with_name(p.name + ".state")


_MULT = np.random.default_rng(20240519).integers(1, 2**63, size=4096, dtype=np.uint64) | np.uint64(1)


def _mix(h: np.ndarray) -> np.ndarray:
    """A 64-bit finaliser (splitmix64) on uint64 arrays, so that nearby sums spread."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def _row_hashes(x: np.ndarray) -> np.ndarray:
    """uint64 [n]: a hash of each row's float32 bits (a random odd multiplier per column, summed mod 2^64)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    chunk = max(1, 2**22 // (8 * max(d, 1)))  # 4 MiB of uint64 at a time
    mult = np.resize(_MULT, d) + np.arange(d, dtype=np.uint64) * np.uint64(2)
    out = np.empty(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for b in range(0, n, chunk):
            bits = x[b : b + chunk].view(np.uint32).astype(np.uint64)
            out[b : b + chunk] = (bits * mult).sum(axis=1, dtype=np.uint64) + np.uint64(d)
    return _mix(out)


def product_fingerprints(rec: Recommender, labels: pd.DataFrame | None, columns: Sequence[str]) -> np.ndarray:
    """uint64 [n] per product of ``rec``: its vectors in every arm and its values of ``columns`` (what
    rules and captions read). A product whose fingerprint changed is a changed product to an update."""
    h = np.zeros(len(rec), dtype=np.uint64)
    parts = [_row_hashes(index.vectors) for index in rec.arms.values()]
    if columns:
        if labels is None:
            raise ConfigError(f"columns {list(columns)} need the catalog's labels")
        lab = labels.set_axis(labels.index.map(str)).reindex([str(i) for i in rec.ids])
        for col in columns:
            values = lab[col].astype("object").where(lab[col].notna(), "\x00<missing>").map(str)
            parts.append(pd.util.hash_pandas_object(values, index=False).to_numpy(dtype=np.uint64))
    with np.errstate(over="ignore"):
        for p in parts:
            h = _mix(h * np.uint64(0x9E3779B97F4A7C15) + p)
    return h


def block_path(folder: Path, b: int) -> Path:
    return folder / f"block-{b:06d}.npz"


def save_block(folder: Path, b: int, qpos: np.ndarray, lists: Mapping[str, Lists]) -> None:
    arrays: dict[str, np.ndarray] = {"qpos": qpos}
    for mode, lst in lists.items():
        arrays[f"{mode}:pos"], arrays[f"{mode}:score"], arrays[f"{mode}:threshold"] = lst.pos, lst.score, lst.threshold
        arrays.update({f"{mode}:arm:{a}": v for a, v in lst.arms.items()})
    atomic_write(block_path(folder, b), lambda f: np.savez(f, **arrays))


def load_block(folder: Path, b: int, modes: Sequence[str], arms: Sequence[str]) -> tuple[np.ndarray, dict[str, Lists]]:
    with np.load(block_path(folder, b), allow_pickle=False) as z:
        lists = {mode: Lists(z[f"{mode}:pos"].astype(np.intp), z[f"{mode}:score"],
                             {a: z[f"{mode}:arm:{a}"] for a in arms}, z[f"{mode}:threshold"]) for mode in modes}
        return z["qpos"].astype(np.intp), lists


def save_products(folder: Path, ids: Sequence[Any], fingerprints: np.ndarray, queries: Sequence[str] | None) -> None:
    """The products' ids and fingerprints, and the query ids asked for (None: every product)."""
    arrays = {"ids": np.asarray(ids, dtype=str), "fingerprints": fingerprints,
              "queries": np.asarray(list(queries) if queries is not None else [], dtype=str)}
    atomic_write(folder / "products.npz", lambda f: np.savez(f, **arrays))


def load_products(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(ids, fingerprints, query ids asked for: [] for every product) of a state folder."""
    with np.load(folder / "products.npz", allow_pickle=False) as z:
        return z["ids"].astype(object), z["fingerprints"], z["queries"].astype(object).tolist()


def read_plan(folder: Path) -> dict[str, Any] | None:
    try:
        return read_json_object(folder / "plan.json")
    except (OSError, ValueError):
        return None
