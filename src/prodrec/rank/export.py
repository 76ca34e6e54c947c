"""The related-products table of a whole catalog: ``prodrec export`` and ``prodrec export --update``.

:func:`export_table` ranks every product (or the given query ids) under one or more modes, with
:class:`~prodrec.rank.rules.Rules` inside the ranking, and writes one row per (query, rank) to a Parquet,
CSV or JSON Lines table (:mod:`.table`). The work goes in blocks of queries (:class:`~.lists.ListRanker`,
bounded memory): each finished block is a checkpoint, written atomically to ``<table>.state/``; a run that
is killed (even ``kill -9``) is finished by the next run with the same settings, which computes only the
missing blocks, and the table is the same as an uninterrupted run's. ``engine="ray"`` ranks the blocks on
a Ray cluster (:mod:`.ray_export`): the same rows.

The state folder (:mod:`.state`) is kept after the table is written: :func:`prodrec.rank.update.update_table`
reads it to bring the table up to date after the catalog changed (``prodrec export --update``).
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
from ..core.io import fingerprint, write_json
from ..core.memory import release_free_memory
from .lists import ListRanker, Lists
from .ray_export import ray_runner
from .rules import Rules
from .state import (STATE_VERSION, load_block, product_fingerprints, read_plan, save_block, save_products,
                    state_dir)
from .table import BASE_COLUMNS, TableWriter, arrow_system_pool, read_provenance, table_format

if TYPE_CHECKING:
    from .recommender import Recommender

__all__ = ["BLOCK_QUERIES", "ExportJob", "ExportResult", "compute_blocks", "export_table", "finish_export",
           "make_job", "plan_of", "read_query_ids", "runner_for"]

log = logging.getLogger(__name__)

#: Queries per checkpoint block (each block is ranked in smaller pieces that fit the memory budget).
BLOCK_QUERIES = 2048
#: Test hook: seconds to sleep after each saved block, to land a ``kill -9`` mid-run.
SLOW_ENV = "PRODREC_SLOW_BLOCKS"
#: A candidate whose block score is this far below a list's threshold cannot enter it (block scores are
#: within :data:`~prodrec.rank.lists.EPS` of the pairwise ones): the update checks the others pair by pair.
PREFILTER = 1e-3


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
# ---------------------------------------------------------------------------------------------- settings
@dataclass
class ExportJob:
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
    def queries_asked(self) -> list[str] | None:
        """The query ids asked for (None: every product)."""
        return None if self.query_spec == "all" else list(self.query_spec)

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


def make_job(rec: Recommender, *, labels: pd.DataFrame | None, name_column: str | None, k: int,
         modes: Sequence[str] | None, rules: Rules | None, ids: Sequence[Any] | None, alpha: float | None,
         weights: Mapping[str, float] | None, arm_scores: bool, captions: Sequence[str], block: int | None,
         budget: int | None, skip_unknown: bool = False) -> ExportJob:
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
    return ExportJob(rec, ranker, rules, labels, queries, spec, captions, block, settings, fps)


# ---------------------------------------------------------------------------------------------- state
def products_fingerprint(job: ExportJob) -> str:
    return fingerprint([*job.rec.ids.tolist(), *map(str, job.fingerprints.tolist())])


def plan_of(job: ExportJob) -> dict[str, Any]:
    return {"settings": job.settings, "products": products_fingerprint(job), "block": job.block, "blocks": job.n_blocks,
            "queries": len(job.queries)}


def _pause_for_tests() -> None:
    seconds = float(os.environ.get(SLOW_ENV) or 0)
    if seconds > 0:
        time.sleep(seconds)


# ---------------------------------------------------------------------------------------------- ranking
Runner = Callable[[ListRanker, Sequence[tuple[int, np.ndarray]]], Iterator[tuple[int, dict[str, Lists]]]]


def _local_runner(ranker: ListRanker, blocks: Sequence[tuple[int, np.ndarray]]) -> Iterator[tuple[int, dict[str, Lists]]]:
    sweep = ranker.sweep()  # blocks in catalog order read half the products (see lists.Sweep)
    for b, qpos in blocks:
        yield b, ranker.rank(qpos, sweep)


def runner_for(engine: str, engine_options: Mapping[str, Any] | None, info: dict[str, Any]) -> Runner:
    params.check_engine(engine)
    if engine == "local":
        return _local_runner
    return ray_runner(info=info, **dict(engine_options or {}))


def compute_blocks(job: ExportJob, folder: Path, pending: Sequence[int], runner: Runner, progress: bool) -> None:
    blocks = [(b, job.block_rows(b)) for b in pending]
    with tqdm(total=sum(len(q) for _, q in blocks), desc="export", unit="query", disable=not progress) as bar:
        for b, lists in runner(job.ranker, blocks):
            save_block(folder, b, job.block_rows(b), lists)
            release_free_memory()  # the block's score tiles and lists (see there)
            bar.update(len(job.block_rows(b)))
            _pause_for_tests()


# ---------------------------------------------------------------------------------------------- the table
def _frame(job: ExportJob, qpos: np.ndarray, lists: Mapping[str, Lists], caption_values: Mapping[str, np.ndarray]
           ) -> pd.DataFrame:
    """Table rows of one block: per query (block order), per mode (in order), per rank."""
    ids = job.rec.ids
    parts = []
    for mi, mode in enumerate(job.ranker.modes):
        lst = lists[mode]
        r, j = np.nonzero(lst.pos >= 0)  # by query, then rank
        pos = lst.pos[r, j]
        part = {"_q": r, "_m": np.full(len(r), mi), "query_id": ids[qpos[r]], "rank": j + 1, "id": ids[pos],
                "score": lst.score[r, j], "mode": np.full(len(r), mode, dtype=object)}
        part.update({f"{a}_score": lst.arms[a][r, j] for a in job.ranker.score_arms})
        part.update({c: caption_values[c][pos] for c in job.captions})
        parts.append(part)
    cols = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
    if len(parts) > 1:  # each query's modes in turn
        order = np.lexsort((cols["rank"], cols["_m"], cols["_q"]))
        cols = {c: v[order] for c, v in cols.items()}
    del cols["_q"], cols["_m"]
    return pd.DataFrame(cols)


def _caption_values(job: ExportJob) -> dict[str, np.ndarray]:
    if not job.captions:
        return {}
    assert job.labels is not None
    lab = job.labels.set_axis(job.labels.index.map(str)).reindex([str(i) for i in job.rec.ids])
    return {c: lab[c].astype("object").where(lab[c].notna(), None).to_numpy() for c in job.captions}


def _counts(job: ExportJob, folder: Path) -> tuple[dict[str, int], dict[str, int]]:
    short = dict.fromkeys(job.ranker.modes, 0)
    empty = dict.fromkeys(job.ranker.modes, 0)
    for b in range(job.n_blocks):
        _, lists = load_block(folder, b, job.ranker.modes, job.ranker.score_arms)
        for mode, lst in lists.items():
            n = lst.lengths()
            short[mode] += int((n < job.ranker.k).sum())
            empty[mode] += int((n == 0).sum())
    return short, empty


def _write_table(job: ExportJob, out: Path, folder: Path, prov: dict[str, Any]) -> int:
    captions = _caption_values(job)
    with TableWriter(out, job.columns(), prov) as writer:
        for b in range(job.n_blocks):
            qpos, lists = load_block(folder, b, job.ranker.modes, job.ranker.score_arms)
            writer.write(_frame(job, qpos, lists, captions))
            release_free_memory()
    return writer.rows


def finish_export(job: ExportJob, out: Path, folder: Path, provenance: Mapping[str, Any] | None, computed: int, t0: float,
            update: dict[str, Any] | None, engine: dict[str, Any]) -> ExportResult:
    short, empty = _counts(job, folder)
    token = uuid.uuid4().hex
    export_info = {**job.settings, "rules_text": job.rules.describe(), "queries": len(job.queries),
                   "query_ids": job.settings["queries"], "short_lists": short, "empty_lists": empty,
                   "state": folder.name, "token": token, "engine": engine, "update": update,
                   "format": table_format(out)}
    prov = {**dict(provenance or {}), "export": export_info}
    rows = _write_table(job, out, folder, prov)
    write_json(folder / "plan.json", {**plan_of(job), "complete": True, "token": token, "table": out.name})
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
    with arrow_system_pool():  # see there: the export's memory
        job = make_job(rec, labels=labels, name_column=name_column, k=k, modes=modes, rules=rules, ids=ids,
                       alpha=alpha, weights=weights, arm_scores=arm_scores, captions=captions, block=block,
                       budget=budget)
        info: dict[str, Any] = {"engine": engine}
        runner = runner_for(engine, engine_options, info)
        folder = state_dir(out)
        plan = plan_of(job)
        old = read_plan(folder) if resume else None
        same = old is not None and {k_: old.get(k_) for k_ in plan} == plan
        if folder.exists() and not same:
            if old is not None:
                log.info("export: the settings or the catalog changed since the checkpoints in %s: starting over",
                         folder)
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if not (same and old and old.get("complete")):
            write_json(folder / "plan.json", {**plan, "complete": False})
            save_products(folder, job.rec.ids, job.fingerprints, job.queries_asked)
        done = {b for b in range(job.n_blocks) if same and _block_ok(folder, b, job)}
        pending = [b for b in range(job.n_blocks) if b not in done]
        if done:
            log.info("export: %d of %d block(s) done by an earlier run; computing the other %d", len(done),
                     job.n_blocks, len(pending))
        compute_blocks(job, folder, pending, runner, progress)
        return finish_export(job, out, folder, provenance, len(pending), t0, None, info)


def _block_ok(folder: Path, b: int, job: ExportJob) -> bool:
    try:
        qpos, _ = load_block(folder, b, job.ranker.modes, job.ranker.score_arms)
    except (OSError, ValueError, KeyError, EOFError):
        return False
    return np.array_equal(qpos, job.block_rows(b))


# ---------------------------------------------------------------------------------------------- update
