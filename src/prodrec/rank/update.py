"""``prodrec export --update``: an exported table brought up to date after the catalog changed.

:func:`update_table` reads the table's state (:mod:`.state`) and the catalog as it is now (the recommender
built over it: the store embeds only new and changed products). Each product's fingerprint says what was
added, changed or removed. For modes whose scores depend only on the two products compared (one arm's
cosine, and fusion of raw cosines), the update is incremental and exact: new and changed products are scored
against every query - block scores first, the pairs that may reach a list's threshold pair by pair - and
merged into the lists they enter (lists chosen candidate by candidate, with duplicates excluded or diversity,
are ranked again instead); lists that held a removed or changed product, and the lists of new and changed
products, are ranked again. Where a score depends on the whole catalog - z-score calibration (each query's
mean and spread over all products), reciprocal-rank fusion (ranks in whole lists), an approximate index
(rebuilt over the new vectors) - and for diversity after a product was removed or changed (MMR's pool is not
kept), every list is ranked again; the result says so (``update["incremental"]``, ``update["why"]``).
Either way the table written equals what :func:`~prodrec.rank.export.export_table` would write now.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..core.errors import ConfigError
from ..core.io import write_json
from .export import ExportJob, ExportResult, Runner, compute_blocks, finish_export, make_job, plan_of, runner_for
from .lists import ListRanker, Lists, pair_scores
from .rules import Rules
from .state import STATE_VERSION, load_block, load_products, read_plan, save_block, save_products, state_dir
from .table import read_provenance, table_format

if TYPE_CHECKING:
    from .recommender import Recommender

__all__ = ["PREFILTER", "update_table"]

#: A candidate whose block score is this far below a list's threshold cannot enter it (block scores are
#: within :data:`~prodrec.rank.lists.EPS` of the pairwise ones): the update checks the others pair by pair.
PREFILTER = 1e-3


def _why_not_incremental(job: ExportJob) -> str | None:
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
    plan = read_plan(folder)
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
    old_ids, old_fp, query_ids = load_products(folder)
    ids = None if s["queries"] == "all" else query_ids
    job = make_job(rec, labels=labels, name_column=s.get("name_column"), k=s["k"], modes=s["modes"],
               rules=Rules.from_dict(s["rules"]), ids=ids, alpha=None, weights=s["weights"],
               arm_scores=s["arm_scores"], captions=s["captions"], block=plan["block"], budget=budget,
               skip_unknown=True)
    if ids is not None:
        job.settings["queries"] = s["queries"]  # the ids asked for, not those still in the catalog
    info: dict[str, Any] = {"engine": engine}
    runner = runner_for(engine, engine_options, info)

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
            write_json(tmp / "plan.json", {**plan_of(job), "complete": False})
            save_products(tmp, job.rec.ids, job.fingerprints, job.queries_asked)
            compute_blocks(job, tmp, range(job.n_blocks), runner, progress)
            update = {**counts, "incremental": False, "why": why, "merged": 0, "ranked": len(job.queries),
                      "kept": 0}
            computed = job.n_blocks
        else:
            old_lists = _old_lists(folder, plan, s["modes"], job.ranker.score_arms)
            lists, stats = _incremental(job, old_lists, old_ids, old_in_new, new_in_old, bad_old,
                                        added | changed_new, runner, progress)
            save_products(tmp, job.rec.ids, job.fingerprints, job.queries_asked)
            for b in range(job.n_blocks):
                rows = slice(b * job.block, (b + 1) * job.block)
                save_block(tmp, b, job.block_rows(b), {m: lst.take(np.arange(len(job.queries))[rows])
                                                        for m, lst in lists.items()})
            update = {**counts, "incremental": True, "why": None, **stats}
            computed = 0
        result = finish_export(job, table, tmp, provenance, computed, t0, update, info)
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
    parts = [load_block(folder, b, modes, arms) for b in range(int(plan["blocks"]))]
    qpos = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.intp)
    return qpos, {m: Lists.concat([p[1][m] for p in parts], int(plan["settings"]["k"]), arms) for m in modes}


def _incremental(job: ExportJob, old: tuple[np.ndarray, dict[str, Lists]], old_ids: np.ndarray, old_in_new: np.ndarray,
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

