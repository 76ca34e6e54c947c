"""What each ``prodrec`` command does: turn parsed arguments into library calls and print the result.

The parser (:mod:`prodrec.run.cli`) only reads flags; these functions call the library, which decides
(which arms a request builds, which modes it can rank with, what a catalog holds) and checks everything
before any catalog is loaded or model built. Every command prints text, or strict JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError, DataNotFound
from ..core.io import dumps
from ..core.provenance import provenance, save_json
from ..core.vocab import LEARNED, NONE_WORDS
from ..data.catalog import Catalog, load_catalog
from ..data.demo import write_demo_catalog
from ..data.fetch import CACHE_DIR
from ..data.locate import fetch_data, find_data_dir
from ..data.schema import COLOUR_LABEL, STYLE_LABEL
from ..data.text import LabelMask
from ..embed.embedding import default_store_dir, open_store
from ..embed.registry import ARMS
from ..evaluation.metrics import check_metrics
from ..evaluation.names import mode_titles, model_name
from ..evaluation.report import metric_table, precision_table, significance_legend, significance_table
from ..evaluation.reference import KAGL_SOURCE, kagl_reference
from ..evaluation.runs import TUNED_MODE, QuerySplit, Tuned, evaluate, split_queries, tune_fusion
from ..evaluation.composed import COMPOSED_QUERIES, MIN_RELEVANT, composed_task
from ..evaluation.tasks import KAGL_LABELS, NAME_QUERIES, label_task, name_task, task_modes
from ..evaluation.significance import check_test, compare_modes
from ..rank.compose import Composer
from ..evaluation.html_report import write_html_report
from ..evaluation.tables import evaluate_table
from ..rank.export import read_query_ids
from ..rank.state import state_dir
from ..rank.rules import Rules
from ..rank.table import read_provenance, read_table, table_format
from .experiment import ArmRequest, Experiment, build_experiment, request_arms, withheld_columns
from .prototypes import catalog_prototypes, outside_prototypes, prototype_arms
from .notebooks import copy_notebooks, find_notebooks, kaggle_stage, resources_root, run_notebooks

log = logging.getLogger("prodrec")


def catalog_options(args: argparse.Namespace) -> dict[str, Any]:
    """The catalog flags as :func:`~prodrec.catalog.load_catalog` keyword arguments (unset ones left out)."""
    delim = getattr(args, "delimiter", None)
    out = {
        "id_column": args.id_column, "image_column": args.image_column, "image_pattern": args.image_pattern,
        "text_columns": args.text_columns, "label_columns": args.label_columns,
        "caption_columns": args.caption_columns, "delimiter": "\t" if delim in ("tab", "\\t") else delim,
        "format": getattr(args, "format", None), "text_clean": getattr(args, "text_clean", None),
        "require_images": False if getattr(args, "keep_without_photo", False) else None,
    }
    return {k: v for k, v in out.items() if v is not None}


def _image_cache(args: argparse.Namespace) -> Path:
    """Where fetched photos are: ``images/`` in the store (``--store`` or the default store)."""
    return (Path(args.store).expanduser() if getattr(args, "store", None) else default_store_dir()) / CACHE_DIR


def _labels(args: argparse.Namespace) -> list[str] | None:
    return [c.strip() for c in args.labels.split(",") if c.strip()] if getattr(args, "labels", None) else None


def _model(value: str | None) -> str | None:
    return None if value is None or value.lower() in NONE_WORDS else value


def arm_request(args: argparse.Namespace, **overrides: str | None) -> ArmRequest:
    """The arms the command's flags ask for (``--arms`` and each ``--<arm>-model``), checked against the
    modes and weights it will use; ``overrides`` replace a flag's model (the search command embeds only the
    arm it searches with)."""
    models = {name: _model(getattr(args, f"{name}_model", None)) for name, e in ARMS.items() if not e.trained}
    models.update({name: _model(m) for name, m in overrides.items()})
    arms = args.arms.split(",") if getattr(args, "arms", None) else None
    no_learned = bool(getattr(args, "no_learned", False))
    return request_arms(models, arms, learned=False if no_learned else None,
                        evaluating=args.command == "evaluate")


def _experiment(args: argparse.Namespace, request: ArmRequest, include_ids: tuple[str, ...] = (),
                k: int | None = None, modes: Sequence[str] | None = None, require_ids: bool = False,
                catalog: Catalog | None = None, withheld: Sequence[str] | None = None) -> Experiment:
    learned = request.learned
    return build_experiment(
        args.data, args.n, args.seed, catalog=catalog,
        models=request.models, protocol=args.protocol, withheld=_labels(args) if withheld is None else withheld,
        learned={"epochs": args.learn_epochs, "seed": args.learn_seed, "max_train": args.max_train} if learned
        else False,
        calibration=getattr(args, "calibration", "auto"), index=args.index,
        image_weights=None if args.random_image_weights else "imagenet",
        resnet_weights=args.resnet_weights, store_dir=args.store, batch_size=args.batch_size,
        chunk_size=args.chunk_size, stratify=args.stratify, include_ids=include_ids,
        alpha=getattr(args, "alpha", 0.5), weights=getattr(args, "weights", None),
        catalog_options=catalog_options(args), k=k, modes=modes, require_ids=require_ids, progress=not args.quiet,
        engine=args.engine, engine_options=_engine_options(args), backend=args.backend, precision=args.precision,
        fetch_images=bool(getattr(args, "fetch_images", False)),
    )


def _engine_options(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.engine != "ray":
        return None
    return {"address": args.address, "workers": args.workers, "gpus_per_worker": args.gpus_per_worker}


def _emit(args: argparse.Namespace, text: str, payload: Any) -> None:
    print(dumps(payload) if getattr(args, "json", False) else text)


def _save(args: argparse.Namespace, name: str, payload: Any, prov: dict[str, Any]) -> str | None:
    if not getattr(args, "out", None):
        return None
    return str(save_json(Path(args.out) / name, payload, prov))


def _check_out(args: argparse.Namespace) -> None:
    """An --out folder that cannot be written is refused before any work."""
    out = getattr(args, "out", None)
    if not out:
        return
    p = Path(out)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the output folder {p}: {exc.strerror or exc}") from None
    if not os.access(p, os.W_OK):
        raise ConfigError(f"the output folder {p} is not writable")


def cmd_embed(args: argparse.Namespace) -> int:
    _check_out(args)
    exp = _experiment(args, arm_request(args).check())
    models = exp.models()
    payload = {"products": len(exp.catalog), "models": models, "skipped_arms": exp.skipped,
               "store": exp.settings["store"]}
    lines = [f"{len(exp.catalog)} products; store {exp.settings['store']}"]
    for arm, m in models.items():
        if m:
            lines.append(f"  {arm}: {m['model_id']} ({m['dim']}-d; {m.get('loaded', 0)} from the store, "
                         f"{m.get('computed', 0)} computed; weights {m.get('weight_source')}; {m['failures']} failed)")
    lines.extend(f"  {arm}: left out ({why})" for arm, why in exp.skipped.items())
    fetched = exp.catalog.report.fetch
    if fetched is not None:
        lines.append(f"  {fetched.summary()}")
        payload["fetch"] = fetched.to_dict()
    prov = exp.provenance()
    _save(args, "embeddings.json", payload, prov)
    _emit(args, "\n".join(lines), {"provenance": prov, **payload})
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    _check_out(args)
    ids = [str(i) for i in args.id]
    if len(ids) > 1 or args.not_ids or args.text is not None:
        if _rules(args):
            raise ConfigError("rules (--same, --different, --where, --exclude-duplicates, --diversity) rank one "
                              "product's list; a composed query (a second --id, --not, --text) takes none: leave "
                              "them out, or ask for one product")
        return _recommend_composed(args, ids)
    qid = ids[0]
    request = arm_request(args).check([args.mode], args.weights)
    rules = _rules(args)
    exp = _experiment(args, request, include_ids=(qid,), k=args.k, modes=[args.mode], require_ids=True)
    df = exp.recommend(qid, k=args.k, mode=args.mode, rules=rules, alpha=args.alpha, weights=args.weights)
    cols = list(dict.fromkeys([*(exp.catalog.schema.caption_columns or ()), *exp.catalog.label_columns]))
    lab = exp.labels
    q = lab.loc[qid]
    df = df.join(lab[cols], on="id")
    payload = {"query": {"id": qid, **{c: q[c] for c in cols}}, "mode": args.mode, "k": args.k,
               "recommendations": df.to_dict(orient="records")}
    text = f"query {qid}: " + " | ".join(str(q[c]) for c in cols) + f"\n{args.mode} top-{args.k}"
    if rules:
        payload["rules"] = rules.to_dict()
        text += f" ({rules.describe()}" + (f"; only {len(df)} qualify" if len(df) < args.k else "") + ")"
    text += ":\n" + df.to_string(index=False, float_format=lambda v: f"{v:.3f}")
    prov = exp.provenance(query=qid, k=args.k, mode=args.mode, **({"rules": rules.to_dict()} if rules else {}))
    _save(args, f"recommend-{qid}-{args.mode}.json", payload, prov)
    _emit(args, text, {"provenance": prov, **payload})
    return 0

def _recommend_composed(args: argparse.Namespace, ids: list[str]) -> int:
    """``recommend --id A --id B --not C --text "in red"``: one composed query (Rocchio per arm, see
    :mod:`prodrec.rank.compose`), ranked with the fusion weights (or one arm's, with an arm as --mode)."""
    if args.mode == "rrf":
        raise ConfigError("a composed query is ranked by fused scores: use --mode fused or one arm")
    if args.text is not None and not args.text.strip():
        raise ConfigError('--text needs a modifier, e.g. --text "in red"')
    if not math.isfinite(args.text_weight) or args.text_weight < 0:
        raise ConfigError(f"--text-weight must be finite and ≥ 0, got {args.text_weight}")
    request = arm_request(args).check([args.mode], args.weights)
    both = sorted(set(ids) & set(args.not_ids))
    if both:
        raise ConfigError(f"product(s) {both} are both --id and --not")
    given = list(dict.fromkeys([*ids, *args.not_ids]))
    exp = _experiment(args, request, include_ids=tuple(given), k=args.k, modes=[args.mode], require_ids=True)
    rec = exp.recommender
    weights = args.weights if args.mode == "fused" else {args.mode: 1.0}
    if args.mode != "fused" and len(rec.arms) > 1:
        weights = {a: float(a == args.mode) for a in rec.arms}
    modifier = None
    if args.text is not None:
        searcher = exp.searcher()
        protos = catalog_prototypes(exp) if prototype_arms(exp) and exp.catalog.label_columns else None
        modifier = Composer(searcher if searcher.modes else None, protos)(args.text)
    df = rec.query(ids, args.not_ids, modifier, weights, k=args.k, text_weights=args.text_weight)
    cols = list(dict.fromkeys([*(exp.catalog.schema.caption_columns or ()), *exp.catalog.label_columns]))
    df = df.join(exp.labels[cols], on="id")
    placed = dict(modifier.sources) if modifier is not None else {}
    query = {"positive": ids, "negative": list(args.not_ids), "text": args.text, "text_weight": args.text_weight,
             "placed": placed}
    payload = {"query": query, "mode": args.mode, "k": args.k, "recommendations": df.to_dict(orient="records")}
    head = "query: like " + ", ".join(ids) + (f"; not {', '.join(args.not_ids)}" if args.not_ids else "")
    if args.text is not None:
        head += f"; text {args.text!r} (" + "; ".join(f"{a}: {how}" for a, how in placed.items()) + ")"
    text = f"{head}\n{args.mode} top-{args.k}:\n" + df.to_string(index=False, float_format=lambda v: f"{v:.3f}")
    prov = exp.provenance(query=query, k=args.k, mode=args.mode, weights=args.weights)
    _save(args, f"recommend-composed-{ids[0]}-{args.mode}.json", payload, prov)
    _emit(args, text, {"provenance": prov, **payload})
    return 0


def _filters(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        col, sep, value = pair.partition("=")
        if not sep or not col.strip():
            raise ConfigError(f"--filter looks like COLUMN=VALUE (e.g. gender=Women); got {pair!r}")
        out[col.strip()] = value.strip()
    return out


def cmd_search(args: argparse.Namespace) -> int:
    _check_out(args)
    if not args.query.strip():
        raise ConfigError("search needs a non-empty description, e.g. \"white sports shoes for women\"")
    filters = _filters(args.filter)
    if not _model(getattr(args, f"{args.mode}_model", None)):
        entry = ARMS[args.mode]
        raise ConfigError(f"--mode {args.mode} needs a {entry.model_noun}: {entry.flag} NAME|PATH|auto")
    # only the arm the search needs is embedded
    request = arm_request(args, **{name: None for name in ARMS if name != args.mode and not ARMS[name].trained})
    exp = _experiment(args, request.check([args.mode]), k=args.k, modes=[args.mode])
    df = exp.searcher().search(args.query, k=args.k, mode=args.mode, filters=filters, persist=True)
    prov = exp.provenance(query=args.query, k=args.k, mode=args.mode, filters=filters)
    records = df.to_dict(orient="records")
    _save(args, "search.json", records, prov)
    text = (f"{args.mode} search over {len(exp.recommender)} products: {args.query!r}"
            + (f" (filters {filters})" if filters else "") + "\n"
            + df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    _emit(args, text, {"provenance": prov, "results": records})
    return 0


def _check_task_flags(args: argparse.Namespace) -> None:
    """Flags that mean nothing for the task asked are refused, not ignored: the item task's metrics,
    grading and tuning; -k where the leaderboard fixes the cut-offs; --modes of the composed task (it scores
    every kind of query); --min-relevant outside it; a table (--from) is scored as product -> products."""
    task = args.task
    if task == "item":
        if args.min_relevant is not None:
            raise ConfigError("--min-relevant applies to the composed task only (this is --task item)")
        return
    given = [flag for flag, on in (("--from", args.from_table), ("--tune", args.tune),
                                   ("--metrics", args.metrics != ["precision"]),
                                   ("--grade-levels", args.grade_levels is not None),
                                   ("-k", args.k is not None and task in ("label", "name")),
                                   ("--modes", args.modes and task == "composed"),
                                   ("--min-relevant", args.min_relevant is not None and task != "composed")) if on]
    if given:
        fixed = ("precision, recall and MRR at -k for every kind of query" if task == "composed" else
                 "P@1, P@10, R@1, R@10 and MRR over the top 10, as published")
        raise ConfigError(f"{', '.join(given)} do(es) not apply to --task {task}, which scores {fixed}; "
                          "leave them out (they belong to the item task)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    _check_out(args)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()] if args.modes else None
    labels = [c.strip() for c in args.labels.split(",") if c.strip()] if args.labels else None
    metrics = check_metrics(args.metrics)  # a missing library is named before any embedding
    if args.significance:
        check_test(args.significance)
    _check_task_flags(args)
    args.grade_levels = args.grade_levels or 2
    if args.from_table:
        return _evaluate_table(args, labels, metrics)
    args.k = args.k or 5
    if args.task != "item":
        return _evaluate_task(args, modes)
    request = arm_request(args).check(modes or [], args.weights)
    tune = getattr(args, "tune", None)
    exp = _experiment(args, request, k=args.k, modes=modes)
    split = tuned = None
    if tune:
        split = split_queries(exp.recommender.ids, seed=args.seed)
        _, tuned = tune_fusion(exp.recommender, exp.catalog, split, tune, k=args.k,
                               columns=(labels or list(exp.catalog.label_columns))[:2], progress=not args.quiet)
    res, scores = evaluate(exp.recommender, exp.catalog, k=args.k, modes=modes, columns=labels, alpha=args.alpha,
                           weights=args.weights, n_boot=args.n_boot, seed=args.seed, progress=not args.quiet,
                           protocol=args.protocol, metrics=metrics, grade_levels=args.grade_levels,
                           return_scores=True, queries=split.test if split else None,
                           variants={TUNED_MODE: tuned.weights} if tuned else None)
    asked = {"metrics": metrics, "grade_levels": args.grade_levels, "significance": args.significance}
    tuning = {"tuning": {"split": split.to_dict(), **tuned.to_dict()}} if split and tuned else {}
    prov = exp.provenance(k=args.k, alpha=args.alpha, weights=args.weights, protocol=args.protocol,
                          **(asked if metrics != ["precision"] or args.significance else {}), **tuning)
    m = exp.models()
    titles = mode_titles(exp.recommender, m, {TUNED_MODE: tuned.weights} if tuned else None)
    head = f"{len(exp.recommender)} products, k={args.k}, seed={args.seed}, protocol {args.protocol}\n"
    head += "modes: " + "; ".join(f"{mode} = {titles.get(mode, mode)}" for mode in scores.modes) + "\n"
    head += _tuning_text(len(exp.recommender), split, tuned, m)
    _report_metrics(args, res, scores.per_query, prov, head, tuning)
    return 0


def _report_metrics(args: argparse.Namespace, res: Any, per_query: Any, prov: dict[str, Any], head: str,
                    extra: dict[str, Any] | None = None) -> None:
    """Print (and save with --out) an evaluation table: precision per label with its interval, the other
    metrics, and the significance of every pair of modes when asked."""
    records = res.to_dict(orient="records")
    payload: dict[str, Any] = {"results": records, **(extra or {})}
    text = head
    precision = precision_table(res, ci=True)
    if not precision.empty:
        text += (f"precision@{args.k} (share of recommendations with the query's label; 95% bootstrap interval over "
                 f"queries):\n{precision.to_string()}\n\n")
    text += metric_table(res, exclude=["precision"], ci=True).to_string()
    if args.significance:
        sig = compare_modes(per_query, test=args.significance)
        payload["significance"] = sig.to_dict(orient="records")
        marked = significance_table(res, sig)
        text += "\n\n" + ("" if marked.empty else f"{marked.to_string()}\n") + significance_legend(sig)
    _save(args, "metrics.json", records, prov)
    if args.significance:
        _save(args, "significance.json", payload["significance"], prov)
    _emit(args, text, {"provenance": prov, **payload})


def _evaluate_table(args: argparse.Namespace, labels: list[str] | None, metrics: list[str]) -> int:
    """``evaluate --from TABLE``: score a table of recommendations against the catalog's labels."""
    table = read_table(args.from_table)
    request = arm_request(args)
    if request.arms:  # diversity in the arms' spaces: their vectors from the store
        exp = _experiment(args, request.check())
        catalog, prov = exp.catalog, exp.provenance()
        vectors = {arm: (exp.recommender.ids, index.vectors) for arm, index in exp.recommender.arms.items()}
    else:
        catalog = load_catalog(find_data_dir(args.data), **{**catalog_options(args), "require_images": False},
                               image_cache=_image_cache(args), progress=not args.quiet)
        prov, vectors = provenance(catalog), {}
    res, scores, fit = evaluate_table(table, catalog, k=args.k, columns=labels, metrics=metrics,
                                      grade_levels=args.grade_levels, n_boot=args.n_boot, seed=args.seed,
                                      vectors=vectors, protocol=args.protocol)
    args.k = fit.k
    prov = {**prov, "table": {"path": str(args.from_table), "provenance": read_provenance(args.from_table),
                              **fit.to_dict()}}
    skipped = sum(fit.unknown_queries.values())
    head = (f"table {args.from_table}: {max(fit.queries.values(), default=0)} queries scored against "
            f"{len(catalog)} products, k={fit.k}" + (f"; {skipped} query id(s) not in the catalog" if skipped else "")
            + "\n")
    _report_metrics(args, res, scores.per_query, prov, head, {"table": fit.to_dict()})
    return 0


def _rules(args: argparse.Namespace) -> Rules | None:
    """The rule flags as :class:`Rules` (None when none is given)."""
    rules = Rules.make(same=args.same, different=args.different, where=args.where or (),
                       exclude_duplicates=args.exclude_duplicates, diversity=args.diversity)
    return rules or None


def cmd_export(args: argparse.Namespace) -> int:
    table = Path(args.update or args.out)
    table_format(table)
    if args.update:
        given = [flag for flag, value in (("-k", args.k), ("--modes", args.modes), ("--ids", args.ids),
                                          ("--arm-scores", args.arm_scores), ("--captions", args.captions),
                                          ("--block", args.block)) if value is not None]
        given += [f"--{name.replace('_', '-')}" for name in ("same", "different", "where", "exclude_duplicates",
                                                              "diversity") if getattr(args, name) is not None]
        if given:
            raise ConfigError(f"--update reads k, modes, ids, rules and columns from the table's export; drop "
                              f"{', '.join(given)} (or run a full export with --out)")
        if not table.is_file():
            raise ConfigError(f"--update {table}: no such table (export one first with --out)")
    rules = None if args.update else _rules(args)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()] if args.modes else None
    k = args.k or 10
    ids = read_query_ids(args.ids) if args.ids else None
    request = arm_request(args).check(modes or [], args.weights)
    try:
        table.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the folder of {table}: {exc.strerror or exc}") from None
    exp = _experiment(args, request, k=None if args.update else k, modes=modes)
    captions = None
    if args.captions is not None:
        captions = ([c.strip() for c in args.captions.split(",") if c.strip()] if args.captions
                    else list(exp.catalog.schema.caption_columns or ()))
    result = exp.export(table, k=k, modes=modes, rules=rules, ids=ids, update=bool(args.update), captions=captions,
                        arm_scores=bool(args.arm_scores), block=args.block, engine=args.engine,
                        engine_options=_engine_options(args), progress=not args.quiet)
    export = result.provenance["export"]
    payload = {"table": str(result.path), "rows": result.rows, "queries": result.queries, "modes": result.modes,
               "k": result.k, "rules": export["rules"], "short_lists": result.short_lists,
               "empty_lists": result.empty_lists, "blocks": result.blocks, "blocks_computed": result.blocks_computed,
               "seconds": round(result.seconds, 3), "update": result.update, "state": str(state_dir(result.path))}
    text = result.summary() + f"\n  rules: {export['rules_text']}"
    _emit(args, text, {"provenance": result.provenance, **payload})
    return 0


def cmd_html_report(args: argparse.Namespace) -> int:
    table = Path(args.table)
    table_format(table)
    catalog = None
    if args.data:
        catalog = load_catalog(find_data_dir(args.data), **{**catalog_options(args), "require_images": False},
                               image_cache=_image_cache(args), progress=not args.quiet)
    path = write_html_report(table, args.html, catalog=catalog, n=args.n, seed=args.seed, thumb=args.thumb)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, self-contained)")
    return 0


def _tuning_text(n: int, split: QuerySplit | None, tuned: Tuned | None, models: dict[str, Any]) -> str:
    """Which queries tuned what, and which ones every row is scored on."""
    if split is None or tuned is None:
        text = (f"queries: all {n} products; nothing was tuned on them (fusion weights as given: --alpha / "
                "--weights; --tune alpha|weights chooses them on validation queries)\n")
    else:
        text = (f"tuned on validation queries: {tuned.describe()}\nqueries: {split.describe()}; every row below is "
                f"scored on the {len(split.test)} test queries ({TUNED_MODE} = the weighting chosen on validation)\n")
    learned = models.get(LEARNED)
    if learned:
        training = learned.get("training") or {}
        config = training.get("config") or {}
        text += (f"learned arm: {model_name(learned)}, {config.get('epochs')} epochs (fixed, not tuned on these "
                 f"queries), trained on {(training.get('train_ids') or {}).get('count')} products outside the "
                 "evaluated sample\n")
    return text


def _evaluate_task(args: argparse.Namespace, modes: list[str] | None) -> int:
    """``evaluate --task label|name|composed`` (:mod:`prodrec.evaluation.tasks`): which arms take the task
    is checked before anything is loaded; prototypes (label: arms that read no text; composed: the colour
    word in them) are fitted on the catalog's products outside the sample."""
    task = args.task
    labels = _labels(args)
    columns = labels or (list(KAGL_LABELS) if task == "label" else [STYLE_LABEL, COLOUR_LABEL])
    if task == "composed" and len(columns) != 2:
        raise ConfigError(f"the composed task takes two --labels, the product's type and the colour asked for "
                          f"(default {STYLE_LABEL},{COLOUR_LABEL}); got {columns}")
    withheld = (labels or columns) if task == "label" and args.protocol == "withheld" else None
    request = arm_request(args).check([m for m in modes or () if m != "fused"], args.weights)
    # composed: the learned arm's prototypes too (fitted on its training products), kept with their members
    # for near prototypes of the query's product
    proto_arms = [a for a in request.arms if a in ARMS and not ARMS[a].text_query
                  and (not ARMS[a].trained or task == "composed")]
    # refused before any work: arms that cannot take the task, modes that are not there
    # composed: without --labels the catalog's label columns are withheld, checked against the two it
    # scores once the experiment is built (composed_task); --labels given must hold them already
    early = withheld if task != "composed" else (labels if labels is not None else columns)
    task_modes(task, request.arms, args.protocol, columns=columns, withheld=early or (),
               prototype_arms=proto_arms if task == "label" else (), modes=modes if task != "composed" else None)
    if args.significance:
        check_test(args.significance)
    wants_protos = bool(proto_arms) and task in ("label", "composed") and (
        modes is None or any(m in proto_arms or m == "fused" for m in modes))
    full = (load_catalog(find_data_dir(args.data), **catalog_options(args), image_cache=_image_cache(args),
                         progress=not args.quiet) if wants_protos else None)
    exp = _experiment(args, request, catalog=full, withheld=withheld)
    searcher = exp.searcher()
    hidden = exp.settings.get("withheld_fields") or []
    protos = None
    if wants_protos:
        try:
            protos = outside_prototypes(exp, full, [c for c in columns if c in exp.catalog.df.columns],
                                        [a for a in proto_arms if a in exp.embeddings], members=task == "composed",
                                        progress=not args.quiet)
        except ConfigError as exc:
            if modes is not None and any(m in proto_arms for m in modes):
                raise
            log.warning("no prototypes, so the %s arm(s) do not take the %s task: %s", ", ".join(proto_arms), task, exc)
    progress = not args.quiet
    if task == "label":
        run = label_task(searcher, columns, modes, withheld=hidden, prototypes=protos, progress=progress)
    elif task == "name":
        run = name_task(searcher, args.n_queries or NAME_QUERIES, args.query_seed, modes, progress=progress)
    else:
        run = composed_task(searcher, protos, n_queries=args.n_queries or COMPOSED_QUERIES, seed=args.query_seed,
                            k=args.k, withheld=hidden, type_column=columns[0], colour_column=columns[1],
                            min_relevant=args.min_relevant or MIN_RELEVANT,
                            progress=progress)
    res = run.table(n_boot=args.n_boot, seed=args.seed)
    prov = exp.provenance(task=task, task_settings=run.settings, query_kinds=run.kinds, refused=run.skipped,
                          protocol=args.protocol, prototypes=None if protos is None else {
                              "columns": protos.columns, "arms": protos.arms, "fitted_on": len(protos.fitted_ids),
                              "overlap_with_sample": protos.overlap(exp.recommender.ids)})
    records = res.to_dict(orient="records")
    payload: dict[str, Any] = {"results": records, "refused": run.skipped}
    m = exp.models()
    arms = ", ".join(f"{a}: {s['model_id']}" for a, s in m.items() if s)
    text = (f"{task} task: {len(exp.recommender)} products, protocol {args.protocol}; {arms}\n"
            + "".join(f"  {a}: not this task ({why})\n" for a, why in run.skipped.items())
            + metric_table(res).to_string() + "\n")
    if task in ("label", "name"):
        ref = kagl_reference(task, ("FashionCLIP2.0", "Marqo-FashionCLIP", "Marqo-FashionSigLIP"))
        text += f"\npublished ({KAGL_SOURCE}):\n" + ref.pivot_table(
            index=["label", "metric"], columns="model", values="value", sort=False).to_string() + "\n"
    if args.significance:
        sig = compare_modes(run.per_query, test=args.significance)
        payload["significance"] = sig.to_dict(orient="records")
        marked = significance_table(res, sig)
        text += "\n" + ("" if marked.empty else f"{marked.to_string()}\n") + significance_legend(sig)
        _save(args, f"significance-{task}.json", payload["significance"], prov)
    _save(args, f"task-{task}.json", records, prov)
    _emit(args, text, {"provenance": prov, **payload})
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    _check_out(args)
    data = find_data_dir(args.data)
    cat = load_catalog(data, **catalog_options(args), image_cache=_image_cache(args), progress=not args.quiet)
    payload = {**cat.report.to_dict(), "schema": cat.schema.to_dict()}
    lines = [str(cat.report)]
    fields, mask = list(cat.text_columns), None
    if args.protocol == "withheld":
        withheld = withheld_columns(cat, args.protocol, _labels(args))
        fields = [c for c in fields if c not in withheld]
        mask = LabelMask.of(cat.df, withheld)
        _, counts = cat.masked(mask, fields)
        payload["withheld"] = {"columns": withheld, "text_fields": fields, "masked_label_values": counts}
        lines.append(f"  withheld protocol: {', '.join(withheld)} left out of the text; "
                     f"{sum(counts.values())} label value(s) masked in {', '.join(fields) or 'no field'} ("
                     + ", ".join(f"{c} {n}" for c, n in counts.items()) + ")")
    if args.show_text:
        _, unusable = cat.split_known(args.show_text)
        every = cat if not unusable else load_catalog(  # products left out for want of a usable image too
            data, **{**catalog_options(args), "require_images": False}, image_cache=_image_cache(args),
            verify_images="none", progress=False)
        sentences = {pid: every.sentence(pid, fields, mask) for pid in args.show_text}
        payload["text"] = sentences
        lines += [f"text of {pid}: {s!r}" + (" (not a usable product: no usable image)" if pid in unusable else "")
                  for pid, s in sentences.items()]
    if args.out:
        _save(args, "load-report.json", payload, provenance(cat))
    _emit(args, "\n".join(lines), payload)
    return 0


def cmd_fetch_images(args: argparse.Namespace) -> int:
    _check_out(args)
    cache = _image_cache(args)
    options = {"concurrency": args.concurrency, "timeout": args.timeout, "retries": args.retries,
               "max_bytes": args.max_bytes}
    cat = load_catalog(find_data_dir(args.data), **{**catalog_options(args), "require_images": False},
                       image_cache=cache, fetch=True, fetch_options=options, progress=not args.quiet)
    report = cat.report.fetch
    if report is None:
        text = f"the catalog has no image URLs: nothing to fetch ({cat.report.source})"
        payload: dict[str, Any] = {"fetch": None, "cache": str(cache)}
    else:
        text = "\n".join(report.lines(limit=50))
        payload = {"fetch": report.to_dict(), "cache": str(cache)}
    if args.out:
        _save(args, "fetch-images.json", payload, provenance(cat))
    _emit(args, text, payload)
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    st = open_store(args.store)
    entries = st.entries()
    lines = [f"store {st.root}: {len(entries)} model(s)"]
    lines += [f"  {e['arm']:<6} {e['model_id']:<45} {e['dim']:>5}-d {e['products']:>8} products "
              f"({e.get('failures', 0)} failed)" for e in entries]
    _emit(args, "\n".join(lines), {"store": str(st.root), "entries": entries})
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    out = write_demo_catalog(args.dir, n=args.n, seed=args.seed)
    print(f"wrote a synthetic catalog of {args.n} products to {out} (try: prodrec evaluate --data {out})")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    print(f"catalog ready at {fetch_data(args.dest)}")
    return 0


def _parse_params(pairs: Sequence[Sequence[str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in pairs:
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def cmd_run_notebooks(args: argparse.Namespace) -> int:
    params = _parse_params(args.parameter)
    folder = Path(args.notebooks) if args.notebooks else None
    notebooks = find_notebooks(folder, args.only)
    try:
        data = find_data_dir(args.data)
    except DataNotFound as exc:
        if not args.demo_if_missing:
            raise
        log.warning("%s\n-> using a synthetic demo catalog instead", exc)
        data = write_demo_catalog(Path(args.out) / "demo-catalog", n=240, seed=0)
    params.setdefault("data_dir", str(Path(data).resolve()))
    options = catalog_options(args)
    if options:
        params.setdefault("catalog_options", options)
    records = run_notebooks(args.out, params, notebooks, progress=not args.quiet)
    for r in records:
        print(f"{r['notebook']:<32} {r['seconds']:>8.1f} s  {r['executed']}")
    print(f"figures: {Path(args.out) / 'figures'}  metrics: {Path(args.out) / 'metrics'}")
    return 0


def cmd_kaggle_stage(args: argparse.Namespace) -> int:
    staged = kaggle_stage(args.dir, args.metadata, args.owner, args.wheel)
    owner = json.loads((staged["kernel"] / "kernel-metadata.json").read_text())["id"].split("/")[0]
    if not args.owner and owner == "prodrec":
        log.warning("the staged ids belong to %r, the kit's placeholder: pass --owner YOUR_KAGGLE_NAME "
                    "before pushing", owner)
    print(f"staged the kernel in {staged['kernel']} and {staged['wheel'].name} in {staged['dataset']}; push with:\n"
          f"  kaggle datasets create -p {staged['dataset']}   (later: kaggle datasets version -p ... -m update)\n"
          f"  kaggle kernels push -p {staged['kernel']}")
    return 0


def cmd_notebooks(args: argparse.Namespace) -> int:
    if args.action == "list":
        for path in find_notebooks():
            print(path)
        print(resources_root() / "notebooks" / "kaggle_kernel.ipynb")
        return 0
    for path in copy_notebooks(args.dir, overwrite=args.force):
        print(f"copied {path}")
    print(f"run them with: prodrec run-notebooks --notebooks {args.dir} --out outputs/NAME")
    return 0
