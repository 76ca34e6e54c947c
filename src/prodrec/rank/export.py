"""The related-products table of a whole catalog: ``prodrec export`` and ``prodrec export --update``.

:func:`export_table` ranks every product (or the given query ids) under one or more modes, with
:class:`~prodrec.rank.rules.Rules` inside the ranking, and writes one row per (query, rank) to a Parquet,
CSV or JSON Lines table (:mod:`.table`). The work goes in blocks of queries (:class:`~.lists.ListRanker`,
bounded memory): each finished block is a checkpoint, written atomically to ``<table>.state/``; a run that
is killed (even ``kill -9``) is finished by the next run with the same settings, which computes only the
missing blocks, and the table is the same as an uninterrupted run's. ``engine="ray"`` ranks the blocks on
a Ray cluster (:mod:`.ray_export`): the same rows.

The state folder is kept after the table is written: :func:`update_table` reads it to bring the table up to
date after the catalog changed (products added, changed, removed). Each product's fingerprint (its vectors,
and the columns the rules and captions read) says what changed. For modes whose scores depend only on the
two products compared (one arm's cosine, and fusion of raw cosines), the update is incremental and exact:
new and changed products are scored against every query and merged into the lists they enter (lists chosen
candidate by candidate, with duplicates excluded or diversity, are ranked again instead), lists that held a
removed or changed product are ranked again, and the table equals a full export's, row for row. Where a
score depends on the whole catalog - z-score calibration (each query's mean and spread over all products),
reciprocal-rank fusion (ranks in whole lists), an approximate index (rebuilt over the new vectors) - and
for diversity after a product was removed or changed (MMR's pool is not kept), every list is ranked again;
the result says so (``update["incremental"]`` and ``update["why"]``).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..core import params
from ..core.errors import ConfigError, UnknownIdError
from ..core.io import atomic_write, fingerprint, read_json_object, write_json
from .lists import ListRanker, Lists, pair_scores
from .ray_export import ray_runner
from .rules import Rules
from .table import BASE_COLUMNS, TableWriter, read_provenance, table_format

if TYPE_CHECKING:
    from .recommender import Recommender

__all__ = ["BLOCK_QUERIES", "STATE_VERSION", "ExportResult", "export_table", "product_fingerprints",
           "read_query_ids", "state_dir", "update_table"]

log = logging.getLogger(__name__)

#: Queries per checkpoint block (each block is ranked in smaller pieces that fit the memory budget).
BLOCK_QUERIES = 2048
#: Version of the state folder's layout.
STATE_VERSION = 1
#: Test hook: seconds to sleep after each saved block, to land a ``kill -9`` mid-run.
SLOW_ENV = "PRODREC_SLOW_BLOCKS"
#: A candidate whose block score is this far below a list's threshold cannot enter it (block scores are
#: within :data:`~prodrec.rank.lists.EPS` of the pairwise ones): the update checks the others pair by pair.
PREFILTER = 1e-3


def state_dir(table: str | os.PathLike[str]) -> Path:
    """The folder beside a table that holds its checkpoints and the state an update reads."""
    p = Path(table)
    return p.with_name(p.name + ".state")


def read_query_ids(path: str | os.PathLike[str]) -> list[str]:
    """Query ids from a file: one per line (a CSV's first column; a header ``id`` or ``query_id`` and lines
    starting with ``#`` are skipped), in order, duplicates dropped."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--ids file {p} does not exist")
    out = []
    for i, line in enumerate(p.read_text(encoding="utf-8-sig").splitlines()):
        value = line.split(",")[0].strip().strip('"')
        if not value or value.startswith("#") or (i == 0 and value.lower() in ("id", "query_id")):
            continue
        out.append(value)
    if not out:
        raise ConfigError(f"--ids file {p} lists no product id (one id per line)")
    return list(dict.fromkeys(out))


@dataclass
class ExportResult:
    """What an export (or an update) did."""

    path: Path
    queries: int
    rows: int
    modes: list[str]
    k: int
    #: Mode -> lists shorter than k (fewer products qualify) and empty ones.
    short_lists: dict[str, int]
    empty_lists: dict[str, int]
    blocks: int
    blocks_computed: int
    seconds: float
    provenance: dict[str, Any]
    #: For an update: added, changed, removed products, lists merged and ranked again, and whether it was
    #: incremental (else ``why`` not).
    update: dict[str, Any] | None = None
    engine: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"{self.rows:,} rows ({self.queries:,} queries x {', '.join(self.modes)}, k={self.k}) -> {self.path}"
                 f" in {self.seconds:.1f} s ({self.blocks_computed} of {self.blocks} block(s) computed"
                 + (f", {self.blocks - self.blocks_computed} from a previous run)" if self.blocks_computed < self.blocks
                    else ")")]
        for mode in self.modes:
            if self.short_lists.get(mode):
                lines.append(f"  {mode}: {self.short_lists[mode]} list(s) shorter than {self.k} (too few products "
                             f"qualify), {self.empty_lists.get(mode, 0)} empty")
        if self.update is not None:
            u = self.update
            lines.append(f"  update: {u['added']} added, {u['changed']} changed, {u['removed']} removed product(s); "
                         + (f"{u['merged']} list(s) merged, {u['ranked']} ranked again, {u['kept']} kept"
                            if u["incremental"] else f"every list ranked again: {u['why']}"))
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- fingerprints
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


# ---------------------------------------------------------------------------------------------- settings
@dataclass
class _Job:
    """Everything an export is: the ranker, the queries, the table's columns, the state's settings."""

    rec: Recommender
    ranker: ListRanker
    rules: Rules
    labels: pd.DataFrame | None
    queries: np.ndarray  # positions into rec.ids, in table order
    query_spec: str | list[str]  # "all" or the ids asked for
    captions: list[str]
    block: int
    settings: dict[str, Any]
    fingerprints: np.ndarray

    @property
    def n_blocks(self) -> int:
        return max(1, -(-len(self.queries) // self.block))

    def block_rows(self, b: int) -> np.ndarray:
        return self.queries[b * self.block : (b + 1) * self.block]

    def columns(self) -> dict[str, str]:
        cols = {c: ("int" if c == "rank" else "float" if c == "score" else "str") for c in BASE_COLUMNS}
        cols.update({f"{a}_score": "float" for a in self.ranker.score_arms})
        cols.update({c: "str" for c in self.captions})
        return cols


def _job(rec: Recommender, *, labels: pd.DataFrame | None, name_column: str | None, k: int,
         modes: Sequence[str] | None, rules: Rules | None, ids: Sequence[Any] | None, alpha: float | None,
         weights: Mapping[str, float] | None, arm_scores: bool, captions: Sequence[str], block: int | None,
         budget: int | None, skip_unknown: bool = False) -> _Job:
    modes = list(dict.fromkeys(modes or (["fused"] if len(rec.arms) > 1 else list(rec.arms))))
    for mode in modes:
        params.check_mode(mode, rec.arms)
    k = params.check_k(k, len(rec))
    rules = rules or Rules()
    captions = list(dict.fromkeys(captions))
    clash = [c for c in captions if c in BASE_COLUMNS or c.endswith("_score")]
    if clash:
        raise ConfigError(f"caption column(s) {clash} clash with the table's own columns {list(BASE_COLUMNS)}")
    if captions and labels is None:
        raise ConfigError("caption columns need the catalog's labels")
    unknown_cols = [c for c in captions if labels is not None and c not in labels.columns]
    if unknown_cols:
        raise ConfigError(f"caption column(s) {unknown_cols} are not in the catalog ({list(labels.columns)})"
                          f"{params.suggest(unknown_cols[0], [str(c) for c in labels.columns])}")
    block = params.check_positive_int("block (queries per checkpoint)", block or BLOCK_QUERIES)
    bound = rules.bind(rec.ids, labels, name_column)
    ranker = ListRanker(rec, modes, k, bound if rules else None, weights=weights, alpha=alpha,
                        arm_scores=arm_scores, budget=budget)
    if ids is None:
        queries, spec = np.arange(len(rec)), "all"
    else:
        wanted = list(dict.fromkeys(str(i) for i in ids))
        if not wanted:
            raise ConfigError("no query ids given")
        known = pd.Index(rec.ids).get_indexer(wanted)
        if (known < 0).any() and not skip_unknown:
            raise UnknownIdError([w for w, p in zip(wanted, known) if p < 0], f"the {len(rec)} ranked products",
                                 known=rec.ids)
        queries, spec = known[known >= 0].astype(np.intp), wanted
    name_cols = [name_column] if rules.exclude_duplicates is not None and name_column else []
    fp_cols = list(dict.fromkeys([*rules.columns, *name_cols, *captions]))
    fps = product_fingerprints(rec, labels, fp_cols)
    settings = {
        "version": STATE_VERSION, "modes": modes, "k": k, "rules": rules.to_dict(), "weights": ranker.weights,
        "calibration": rec.calibration, "index": rec.index_kind, "arm_scores": bool(arm_scores),
        "captions": captions, "name_column": name_column if name_cols else None, "fingerprint_columns": fp_cols,
        "arms": {a: int(i.vectors.shape[1]) for a, i in rec.arms.items()},
        "queries": "all" if spec == "all" else {"ids": len(spec), "fingerprint": fingerprint(spec)},
    }
    return _Job(rec, ranker, rules, labels, queries, spec, captions, block, settings, fps)


# ---------------------------------------------------------------------------------------------- state
def _products_fp(job: _Job) -> str:
    return fingerprint([*job.rec.ids.tolist(), *map(str, job.fingerprints.tolist())])


def _plan(job: _Job) -> dict[str, Any]:
    return {"settings": job.settings, "products": _products_fp(job), "block": job.block, "blocks": job.n_blocks,
            "queries": len(job.queries)}


def _block_path(folder: Path, b: int) -> Path:
    return folder / f"block-{b:06d}.npz"


def _save_block(folder: Path, b: int, qpos: np.ndarray, lists: Mapping[str, Lists]) -> None:
    arrays: dict[str, np.ndarray] = {"qpos": qpos}
    for mode, lst in lists.items():
        arrays[f"{mode}:pos"], arrays[f"{mode}:score"], arrays[f"{mode}:threshold"] = lst.pos, lst.score, lst.threshold
        arrays.update({f"{mode}:arm:{a}": v for a, v in lst.arms.items()})
    atomic_write(_block_path(folder, b), lambda f: np.savez(f, **arrays))


def _load_block(folder: Path, b: int, modes: Sequence[str], arms: Sequence[str]) -> tuple[np.ndarray, dict[str, Lists]]:
    with np.load(_block_path(folder, b), allow_pickle=False) as z:
        lists = {mode: Lists(z[f"{mode}:pos"].astype(np.intp), z[f"{mode}:score"],
                             {a: z[f"{mode}:arm:{a}"] for a in arms}, z[f"{mode}:threshold"]) for mode in modes}
        return z["qpos"].astype(np.intp), lists


def _save_products(folder: Path, job: _Job) -> None:
    ids = np.asarray(job.rec.ids, dtype=str)
    queries = np.asarray(job.query_spec if job.query_spec != "all" else [], dtype=str)
    atomic_write(folder / "products.npz", lambda f: np.savez(f, ids=ids, fingerprints=job.fingerprints, queries=queries))


def _read_plan(folder: Path) -> dict[str, Any] | None:
    try:
        return read_json_object(folder / "plan.json")
    except (OSError, ValueError):
        return None


def _pause_for_tests() -> None:
    seconds = float(os.environ.get(SLOW_ENV) or 0)
    if seconds > 0:
        time.sleep(seconds)


# ---------------------------------------------------------------------------------------------- ranking
Runner = Callable[[ListRanker, Sequence[tuple[int, np.ndarray]]], Iterator[tuple[int, dict[str, Lists]]]]


def _local_runner(ranker: ListRanker, blocks: Sequence[tuple[int, np.ndarray]]) -> Iterator[tuple[int, dict[str, Lists]]]:
    for b, qpos in blocks:
        yield b, ranker.rank(qpos)


def _runner(engine: str, engine_options: Mapping[str, Any] | None, info: dict[str, Any]) -> Runner:
    params.check_engine(engine)
    if engine == "local":
        return _local_runner
    return ray_runner(info=info, **dict(engine_options or {}))


def _compute(job: _Job, folder: Path, pending: Sequence[int], runner: Runner, progress: bool) -> None:
    blocks = [(b, job.block_rows(b)) for b in pending]
    with tqdm(total=sum(len(q) for _, q in blocks), desc="export", unit="query", disable=not progress) as bar:
        for b, lists in runner(job.ranker, blocks):
            _save_block(folder, b, job.block_rows(b), lists)
            bar.update(len(job.block_rows(b)))
            _pause_for_tests()


# ---------------------------------------------------------------------------------------------- the table
def _frame(job: _Job, qpos: np.ndarray, lists: Mapping[str, Lists], caption_values: Mapping[str, np.ndarray]
           ) -> pd.DataFrame:
    """Table rows of one block: per query (block order), per mode (in order), per rank."""
    ids = job.rec.ids
    parts = []
    for mi, mode in enumerate(job.ranker.modes):
        lst = lists[mode]
        r, j = np.nonzero(lst.pos >= 0)
        pos = lst.pos[r, j]
        part = {"_q": r, "_m": np.full(len(r), mi), "query_id": ids[qpos[r]], "rank": j + 1, "id": ids[pos],
                "score": lst.score[r, j], "mode": np.full(len(r), mode, dtype=object)}
        part.update({f"{a}_score": lst.arms[a][r, j] for a in job.ranker.score_arms})
        part.update({c: caption_values[c][pos] for c in job.captions})
        parts.append(pd.DataFrame(part))
    df = pd.concat(parts, ignore_index=True)
    df = df.sort_values(["_q", "_m", "rank"], kind="stable")
    return df.drop(columns=["_q", "_m"]).reset_index(drop=True)


def _caption_values(job: _Job) -> dict[str, np.ndarray]:
    if not job.captions:
        return {}
    assert job.labels is not None
    lab = job.labels.set_axis(job.labels.index.map(str)).reindex([str(i) for i in job.rec.ids])
    return {c: lab[c].astype("object").where(lab[c].notna(), None).to_numpy() for c in job.captions}


def _counts(job: _Job, folder: Path) -> tuple[dict[str, int], dict[str, int]]:
    short = dict.fromkeys(job.ranker.modes, 0)
    empty = dict.fromkeys(job.ranker.modes, 0)
    for b in range(job.n_blocks):
        _, lists = _load_block(folder, b, job.ranker.modes, job.ranker.score_arms)
        for mode, lst in lists.items():
            n = lst.lengths()
            short[mode] += int((n < job.ranker.k).sum())
            empty[mode] += int((n == 0).sum())
    return short, empty


def _write_table(job: _Job, out: Path, folder: Path, prov: dict[str, Any]) -> int:
    captions = _caption_values(job)
    with TableWriter(out, job.columns(), prov) as writer:
        for b in range(job.n_blocks):
            qpos, lists = _load_block(folder, b, job.ranker.modes, job.ranker.score_arms)
            writer.write(_frame(job, qpos, lists, captions))
    return writer.rows


def _finish(job: _Job, out: Path, folder: Path, provenance: Mapping[str, Any] | None, computed: int, t0: float,
            update: dict[str, Any] | None, engine: dict[str, Any]) -> ExportResult:
    short, empty = _counts(job, folder)
    token = uuid.uuid4().hex
    export_info = {**job.settings, "rules_text": job.rules.describe(), "queries": len(job.queries),
                   "query_ids": job.settings["queries"], "short_lists": short, "empty_lists": empty,
                   "state": folder.name, "token": token, "engine": engine, "update": update,
                   "format": table_format(out)}
    prov = {**dict(provenance or {}), "export": export_info}
    rows = _write_table(job, out, folder, prov)
    write_json(folder / "plan.json", {**_plan(job), "complete": True, "token": token, "table": out.name})
    return ExportResult(out, len(job.queries), rows, list(job.ranker.modes), job.ranker.k, short, empty,
                        job.n_blocks, computed, time.perf_counter() - t0, prov, update, engine)


def export_table(
    rec: Recommender,
    out: str | os.PathLike[str],
    *,
    labels: pd.DataFrame | None = None,
    name_column: str | None = None,
    k: int = 10,
    modes: Sequence[str] | None = None,
    rules: Rules | None = None,
    ids: Sequence[Any] | None = None,
    alpha: float | None = None,
    weights: Mapping[str, float] | None = None,
    arm_scores: bool = False,
    captions: Sequence[str] = (),
    block: int | None = None,
    engine: str = "local",
    engine_options: Mapping[str, Any] | None = None,
    progress: bool = True,
    provenance: Mapping[str, Any] | None = None,
    budget: int | None = None,
    resume: bool = True,
) -> ExportResult:
    """Write the top-k of every product (or of ``ids``) under ``modes`` to ``out`` (see the module).

    Parameters
    ----------
    rec : Recommender
    out : path
        ``.parquet``, ``.csv`` or ``.jsonl``; its checkpoints and state go to ``<out>.state/``.
    labels : DataFrame, optional
        The catalog's metadata indexed by id (``catalog.labels``): what rules and captions read.
    name_column : str, optional
        The column that names a product (``exclude_duplicates`` collapses equal names).
    k : int
        List length (a list is shorter only when fewer products qualify under the rules).
    modes : sequence of str, optional
        Default ``fused`` (the arm, with one arm). Rows carry their ``mode``.
    rules : Rules, optional
    ids : sequence, optional
        Query ids, in table order (default: every product, in id order).
    alpha, weights : optional
        Fusion weights (default: the recommender's).
    arm_scores : bool
        Add each arm's cosine as ``<arm>_score``.
    captions : sequence of str
        Catalog columns of the recommended product to add (e.g. its name).
    block : int, optional
        Queries per checkpoint (default :data:`BLOCK_QUERIES`).
    engine : ``local`` or ``ray``
        Where blocks are ranked; ``engine_options``: ``address``, ``workers`` (see :mod:`.ray_export`).
    provenance : dict, optional
        The run's provenance (an experiment's); the export's settings are added under ``export``.
    budget : int, optional
        Bytes of block scores held at once (default a quarter of the vectors, 4 to 128 MiB).
    resume : bool
        Reuse the finished blocks of an earlier run with the same settings (default); False starts over.

    Returns
    -------
    ExportResult
    """
    t0 = time.perf_counter()
    out = Path(out)
    table_format(out)
    job = _job(rec, labels=labels, name_column=name_column, k=k, modes=modes, rules=rules, ids=ids, alpha=alpha,
               weights=weights, arm_scores=arm_scores, captions=captions, block=block, budget=budget)
    info: dict[str, Any] = {"engine": engine}
    runner = _runner(engine, engine_options, info)
    folder = state_dir(out)
    plan = _plan(job)
    old = _read_plan(folder) if resume else None
    same = old is not None and {k_: old.get(k_) for k_ in plan} == plan
    if folder.exists() and not same:
        if old is not None:
            log.info("export: the settings or the catalog changed since the checkpoints in %s: starting over", folder)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not (same and old and old.get("complete")):
        write_json(folder / "plan.json", {**plan, "complete": False})
        _save_products(folder, job)
    done = {b for b in range(job.n_blocks) if same and _block_ok(folder, b, job)}
    pending = [b for b in range(job.n_blocks) if b not in done]
    if done:
        log.info("export: %d of %d block(s) done by an earlier run; computing the other %d", len(done),
                 job.n_blocks, len(pending))
    _compute(job, folder, pending, runner, progress)
    return _finish(job, out, folder, provenance, len(pending), t0, None, info)


def _block_ok(folder: Path, b: int, job: _Job) -> bool:
    try:
        qpos, _ = _load_block(folder, b, job.ranker.modes, job.ranker.score_arms)
    except (OSError, ValueError, KeyError, EOFError):
        return False
    return np.array_equal(qpos, job.block_rows(b))


# ---------------------------------------------------------------------------------------------- update
def _why_not_incremental(job: _Job) -> str | None:
    if job.rec.index_kind != "exact":
        return f"the {job.rec.index_kind} index is rebuilt over the new vectors, so its answers change"
    if "rrf" in job.ranker.modes:
        return "reciprocal-rank fusion ranks by each arm's whole list, which any new product may shift"
    if "fused" in job.ranker.modes and job.rec.calibration == "zscore":
        return "z-score calibration divides by each query's spread over the whole catalog, which changed"
    return None


def update_table(
    rec: Recommender,
    table: str | os.PathLike[str],
    *,
    labels: pd.DataFrame | None = None,
    engine: str = "local",
    engine_options: Mapping[str, Any] | None = None,
    progress: bool = True,
    provenance: Mapping[str, Any] | None = None,
    budget: int | None = None,
) -> ExportResult:
    """Bring an exported ``table`` up to date with ``rec`` (the catalog as it is now; its vectors from the
    store, which embeds only new and changed products), with the settings the table was exported with.

    The table written equals what :func:`export_table` would write now (see the module for how, and when
    every list is ranked again). ``labels`` must be the catalog's current metadata when the export used
    rules or captions.
    """
    t0 = time.perf_counter()
    table = Path(table)
    table_format(table)
    folder = state_dir(table)
    plan = _read_plan(folder)
    if plan is None or not plan.get("complete") or not table.is_file():
        raise ConfigError(f"{table} has no complete export state in {folder}: --update needs a table written by "
                          "prodrec export (run a full export first)")
    if read_provenance(table).get("export", {}).get("token") != plan.get("token"):
        raise ConfigError(f"{folder} belongs to another version of {table} (the table was replaced): run a full "
                          "export")
    s = plan["settings"]
    if s.get("version") != STATE_VERSION:
        raise ConfigError(f"{folder} was written by another version of prodrec: run a full export")
    arms = {a: int(i.vectors.shape[1]) for a, i in rec.arms.items()}
    if arms != s["arms"]:
        raise ConfigError(f"the table was exported with arms {s['arms']} (name: dimensions); this run has {arms}: "
                          "run a full export, or give the same arms and models")
    for key, now in (("calibration", rec.calibration), ("index", rec.index_kind)):
        if s[key] != now:
            raise ConfigError(f"the table was exported with {key} {s[key]!r}; this run has {now!r}: pass the same "
                              "flags or run a full export")
    with np.load(folder / "products.npz", allow_pickle=False) as z:
        old_ids, old_fp, query_ids = z["ids"].astype(object), z["fingerprints"], z["queries"].astype(object)
    ids = None if s["queries"] == "all" else query_ids.tolist()
    job = _job(rec, labels=labels, name_column=s.get("name_column"), k=s["k"], modes=s["modes"],
               rules=Rules.from_dict(s["rules"]), ids=ids, alpha=None, weights=s["weights"],
               arm_scores=s["arm_scores"], captions=s["captions"], block=plan["block"], budget=budget,
               skip_unknown=True)
    if ids is not None:
        job.settings["queries"] = s["queries"]  # the ids asked for, not those still in the catalog
    info: dict[str, Any] = {"engine": engine}
    runner = _runner(engine, engine_options, info)

    new_in_old = pd.Index(old_ids).get_indexer(rec.ids)
    old_in_new = pd.Index(rec.ids).get_indexer(old_ids)
    added = new_in_old < 0
    changed_new = (~added) & (old_fp[np.maximum(new_in_old, 0)] != job.fingerprints)
    removed_old = old_in_new < 0
    bad_old = removed_old.copy()
    bad_old[new_in_old[changed_new]] = True
    counts = {"added": int(added.sum()), "changed": int(changed_new.sum()), "removed": int(removed_old.sum())}
    why = _why_not_incremental(job)
    if why is None and job.rules.diversity is not None and bad_old.any():
        why = "diversity re-ranks each list's pool, which a removed or changed product may have been in"

    tmp = folder.with_name(folder.name + ".new")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        if why is not None:
            write_json(tmp / "plan.json", {**_plan(job), "complete": False})
            _save_products(tmp, job)
            _compute(job, tmp, range(job.n_blocks), runner, progress)
            update = {**counts, "incremental": False, "why": why, "merged": 0, "ranked": len(job.queries),
                      "kept": 0}
            computed = job.n_blocks
        else:
            old_lists = _old_lists(folder, plan, s["modes"], job.ranker.score_arms)
            lists, stats = _incremental(job, old_lists, old_ids, old_in_new, new_in_old, bad_old,
                                        added | changed_new, runner, progress)
            _save_products(tmp, job)
            for b in range(job.n_blocks):
                rows = slice(b * job.block, (b + 1) * job.block)
                _save_block(tmp, b, job.block_rows(b), {m: lst.take(np.arange(len(job.queries))[rows])
                                                        for m, lst in lists.items()})
            update = {**counts, "incremental": True, "why": None, **stats}
            computed = 0
        result = _finish(job, table, tmp, provenance, computed, t0, update, info)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return result


def _old_lists(folder: Path, plan: Mapping[str, Any], modes: Sequence[str], arms: Sequence[str]
               ) -> tuple[np.ndarray, dict[str, Lists]]:
    """Every query's lists of the previous export (old positions), in table order."""
    parts = [_load_block(folder, b, modes, arms) for b in range(int(plan["blocks"]))]
    qpos = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.intp)
    return qpos, {m: Lists.concat([p[1][m] for p in parts], int(plan["settings"]["k"]), arms) for m in modes}


def _incremental(job: _Job, old: tuple[np.ndarray, dict[str, Lists]], old_ids: np.ndarray, old_in_new: np.ndarray,
                 new_in_old: np.ndarray, bad_old: np.ndarray, fresh: np.ndarray, runner: Runner, progress: bool
                 ) -> tuple[dict[str, Lists], dict[str, int]]:
    """New lists for every query of ``job``: old lists kept, merged with new candidates, or ranked again."""
    ranker, k, arms = job.ranker, job.ranker.k, job.ranker.score_arms
    old_qpos, old_lists = old
    row_of_old_query = np.full(len(old_ids), -1, dtype=np.intp)
    row_of_old_query[old_qpos] = np.arange(len(old_qpos))
    q_old = new_in_old[job.queries]  # each new query's old position (-1: a new product)
    q_row = np.where(q_old >= 0, row_of_old_query[np.maximum(q_old, 0)], -1)
    cand = np.flatnonzero(fresh)  # new and changed products (new positions): they may enter lists
    out: dict[str, Lists] = {}
    redo = np.zeros(len(job.queries), dtype=bool)
    merged_rows = np.zeros(len(job.queries), dtype=bool)
    for mode in ranker.modes:
        lst = old_lists[mode].take(np.maximum(q_row, 0))
        pos_old = lst.pos
        lst.pos = np.where(pos_old >= 0, old_in_new[np.maximum(pos_old, 0)], -1)
        mode_redo = (q_row < 0) | fresh[job.queries] | (bad_old[np.maximum(pos_old, 0)] & (pos_old >= 0)).any(axis=1)
        clean = np.flatnonzero(~mode_redo)
        entering = _entering(ranker, mode, job.queries[clean], lst.threshold[clean], cand)
        if ranker.greedy:
            mode_redo[clean[[len(e[0]) > 0 for e in entering]]] = True
        else:
            for row, (c_pos, c_score) in zip(clean, entering):
                if len(c_pos):
                    _merge_into(ranker, lst, row, job.queries[row], c_pos, c_score)
                    merged_rows[row] = True
        out[mode] = lst
        redo |= mode_redo
    rows = np.flatnonzero(redo)
    if len(rows):
        blocks = [(i, job.queries[rows[b : b + job.block]]) for i, b in enumerate(range(0, len(rows), job.block))]
        with tqdm(total=len(rows), desc="update", unit="query", disable=not progress) as bar:
            for i, lists in runner(ranker, blocks):
                target = rows[i * job.block : (i + 1) * job.block]
                for mode, new in lists.items():
                    out[mode].put(target, new)
                bar.update(len(target))
    kept = int((~redo & ~merged_rows).sum())
    return out, {"merged": int((merged_rows & ~redo).sum()), "ranked": len(rows), "kept": kept}


def _entering(ranker: ListRanker, mode: str, qpos: np.ndarray, threshold: np.ndarray, cand: np.ndarray
              ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query: the candidates (positions, pairwise scores) that reach its list's threshold."""
    out: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0, np.intp), np.zeros(0, np.float32))] * len(qpos)
    if not len(cand) or not len(qpos):
        return out
    step = max(1, ranker.budget // (4 * len(cand) * 3))
    for b in range(0, len(qpos), step):
        q = qpos[b : b + step]
        key = None
        for a in ranker.arms_of(mode):
            part = (ranker.weights[a] if mode == "fused" else 1.0) * (ranker.vectors[a][q] @ ranker.vectors[a][cand].T)
            key = part if key is None else key + part
        assert key is not None
        limit = threshold[b : b + step].astype(np.float64) - PREFILTER
        rows, cols = np.nonzero(key >= limit[:, None])
        if not len(rows):
            continue
        width = int(np.bincount(rows).max())
        pad = np.full((len(q), width), -1, dtype=np.intp)
        col = np.arange(len(rows)) - np.searchsorted(rows, rows)
        pad[rows, col] = cand[cols]
        scores = ranker.canonical(mode, q, pad)
        for r in np.unique(rows):
            ok = np.isfinite(scores[r]) & (scores[r] >= threshold[b + r])
            if ok.any():
                out[b + r] = (pad[r][ok], scores[r][ok])
    return out


def _merge_into(ranker: ListRanker, lst: Lists, row: int, qpos: int, c_pos: np.ndarray, c_score: np.ndarray) -> None:
    """Merge candidates into one list (the list's own products are all still there, unchanged)."""
    k = ranker.k
    have = lst.pos[row] >= 0
    pos = np.concatenate([lst.pos[row][have], c_pos])
    score = np.concatenate([lst.score[row][have], c_score]).astype(np.float32)
    order = np.lexsort((pos, -score))[:k]
    pos, score = pos[order], score[order]
    n = len(pos)
    lst.pos[row] = -1
    lst.score[row] = np.nan
    lst.pos[row, :n], lst.score[row, :n] = pos, score
    q = np.array([qpos], dtype=np.intp)
    for a in lst.arms:
        lst.arms[a][row] = np.nan
        lst.arms[a][row, :n] = pair_scores(ranker.vectors[a], q, pos[None, :])[0]
    lst.threshold[row] = score[-1] if n >= k else -np.inf

