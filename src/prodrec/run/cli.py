"""``prodrec`` command line: every argparse definition of the kit lives here.

Commands: embed, recommend, evaluate, load-report, store, demo-catalog, fetch-data, run-notebooks,
kaggle-stage. Every command prints a human-readable result, or strict JSON with ``--json``; arguments are
checked before any catalog is loaded or model built; errors are one clear line (exit code 2) instead of a
traceback, unless ``--debug``; a closed pipe (``prodrec ... | head``) ends quietly.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.io import dumps
from .._version import __version__
from ..core.errors import ConfigError, ProdrecError
from ..core.vocab import AUTO_APPROX_KIND, AUTO_EXACT_MAX, LEARNED
from ..embed.registry import modes as all_modes

if TYPE_CHECKING:
    from .experiment import Experiment

log = logging.getLogger("prodrec")

NONE_WORDS = ("", "none", "off")


# ---------------------------------------------------------------------------------------------- parsing
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number within [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number within [0, 1], got {value}")
    return value


def _weights(text: str) -> dict[str, float]:
    from ..core.params import parse_weights

    try:
        return parse_weights(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _catalog_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("catalog", "where the catalog is and what its columns mean (flags win over a "
                             "prodrec.toml beside the CSV; the Kaggle layout needs none)")
    g.add_argument("--data", help="catalog: a Kaggle folder (styles.csv + images/), a CSV, a folder with a "
                   "prodrec.toml, or the .toml itself; default: $PRODREC_DATA, /kaggle/input/"
                   "fashion-product-images-small, ./data/fashion-product-images-small")
    g.add_argument("--id-column", help="column holding the product id (ids are kept as written: 007 != 7)")
    img = g.add_mutually_exclusive_group()
    img.add_argument("--image-column", help="column holding each image's path (relative to the CSV's folder)")
    img.add_argument("--image-pattern", help="image path pattern relative to the CSV's folder, e.g. img/{id}.png")
    g.add_argument("--text-columns", help="comma list of columns joined into the product sentence "
                   "('' for none: image arm only)")
    g.add_argument("--label-columns", help="comma list of label columns (evaluation, filters)")
    g.add_argument("--caption-columns", help="comma list of caption columns; the first names the product")
    g.add_argument("--delimiter", help="field separator (default: sniffed among , ; tab |); 'tab' for a tab")


def _sample_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=_positive_int, default=None, help="sample this many products (default: all)")
    p.add_argument("--seed", type=int, default=0, help="sample seed (default 0)")
    p.add_argument("--stratify", default=None, help="keep the shares of this column in the sample")


def _model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models")
    g.add_argument("--image-model", default="auto", help="auto | resnet50 | efficientnet-lite0 | none")
    g.add_argument("--text-model", default="auto", help="auto | a sentence-transformers name or folder | none")
    g.add_argument("--clip-model", default="none", help="none (default) | auto | a CLIP checkpoint (hub name, e.g. "
                   "patrickjohncyh/fashion-clip, or folder): adds the clip arm")
    g.add_argument("--colour-model", default="none", help="none (default) | auto | colour-hist: adds the "
                   "training-free colour arm")
    g.add_argument("--arms", default=None, help="comma list of arms to build, e.g. image,text,colour (arms "
                   "not named are off; named ones use their --*-model or auto). Adding 'learned' trains the "
                   "learned arm; on evaluate, --arms with two or more arms adds it by itself (--no-learned)")
    g.add_argument("--no-learned", action="store_true", help="never add the learned arm")
    g.add_argument("--learn-epochs", type=_positive_int, default=30, help="learned arm: training epochs")
    g.add_argument("--learn-seed", type=int, default=0, help="learned arm: training seed")
    g.add_argument("--max-train", type=_positive_int, default=None, help="learned arm: train on at most this "
                   "many products outside the sample (default: all of them, which embeds them all once)")
    g.add_argument("--protocol", default="full", choices=["full", "withheld"],
                   help="full (default): every text column in the product sentence; withheld: the label "
                   "columns (or --labels) removed from every sentence, so a score is not the label read back")
    g.add_argument("--random-image-weights", action="store_true",
                   help="random image weights (timing and shape checks only; recorded in every output)")
    g.add_argument("--resnet-weights", default=None,
                   help="path to resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    g.add_argument("--store", default=None, help="embedding store folder (default $PRODREC_STORE or "
                   "~/.cache/prodrec/store)")
    g.add_argument("--batch-size", type=_positive_int, default=32)
    g.add_argument("--chunk-size", type=_positive_int, default=1024, help="items per resumable chunk")
    g = p.add_argument_group("index", "how many-query searches find neighbours")
    g.add_argument("--index", default="exact", choices=["exact", "ivf", "hnsw", "auto"],
                   help="exact (default; numpy, ties by id) | ivf | hnsw (FAISS, approximate, kept beside the "
                   f"store) | auto (exact below {AUTO_EXACT_MAX:,} products, {AUTO_APPROX_KIND} above)")
    g = p.add_argument_group("engine", "where missing vectors are computed (the store is the same either way)")
    g.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local (default): this process; ray: an actor pool on a Ray cluster (pip install "
                   "'prodrec[scale]')")
    g.add_argument("--address", default=None, help="Ray cluster: auto (a running `ray start` cluster), "
                   "ray://host:10001, ... (default: start a local Ray on this machine)")
    g.add_argument("--workers", type=_positive_int, default=None, help="Ray actors (default: one per CPU, "
                   "or per GPU with --gpus-per-worker)")
    g.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per Ray actor (default 0)")


def _output_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="also write the result (JSON with provenance) under this folder")
    p.add_argument("--json", action="store_true", help="print strict JSON instead of text")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _fusion_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alpha", type=_unit_float, default=0.5, help="image weight of two-arm fusion (0..1)")
    p.add_argument("--weights", type=_weights, default=None,
                   help="per-arm fusion weights, e.g. image=0.7,text=0.3 (overrides --alpha)")
    p.add_argument("--calibration", default="auto", choices=["auto", "raw", "zscore"],
                   help="score scale of fusion: raw cosines (the paper's), or each arm standardised per query; "
                   "auto: raw for image+text, zscore when other arms are fused")


def _add(p: argparse.ArgumentParser, *groups: Callable[[argparse.ArgumentParser], None]) -> None:
    for group in groups:
        group(p)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="prodrec", description="Image- and text-based product recommendation: embed a catalog, recommend, "
        "search by description, evaluate, and run the notebooks. Any catalog: see the catalog flags.")
    ap.add_argument("--version", action="version", version=f"prodrec {__version__}")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    ap.add_argument("--verbose", action="store_true", help="show every library's progress bars and log lines")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("embed", help="fill the per-product embedding store (computes only what is missing)")
    _add(p, _catalog_flags, _sample_flags, _model_flags, _output_flags)

    p = sub.add_parser("recommend", help="top-k recommendations for one product")
    _add(p, _catalog_flags, _sample_flags, _model_flags, _output_flags)
    p.add_argument("--id", required=True, help="query product id, as written in the catalog")
    p.add_argument("-k", type=_positive_int, default=5)
    p.add_argument("--mode", default="fused", choices=all_modes())
    _fusion_flags(p)

    p = sub.add_parser("search", help="products matching a description (text arm, or CLIP: text -> photos)")
    p.add_argument("query", help='a description, e.g. "white sports shoes for women"')
    _add(p, _catalog_flags, _sample_flags, _model_flags, _output_flags)
    p.add_argument("-k", type=_positive_int, default=5)
    p.add_argument("--mode", default="text", choices=["text", "clip"],
                   help="text: the text arm's model against product sentences; clip: CLIP's text tower "
                   "against product photos (needs --clip-model)")
    p.add_argument("--filter", action="append", default=[], metavar="COLUMN=VALUE",
                   help="keep products whose column equals the value, e.g. gender=Women (repeatable)")

    p = sub.add_parser("evaluate", help="precision@k, coverage and diversity of every mode")
    _add(p, _catalog_flags, _sample_flags, _model_flags, _output_flags)
    p.add_argument("-k", type=_positive_int, default=5)
    _fusion_flags(p)
    p.add_argument("--labels", default=None, help="comma list of label columns to score (default: the "
                   "catalog's label columns)")
    p.add_argument("--modes", default=None, help=f"comma list of {', '.join(all_modes())} (default: all available)")
    p.add_argument("--n-boot", type=_positive_int, default=1000, help="bootstrap resamples for the CIs")

    p = sub.add_parser("load-report", help="load a catalog and print what was wrong with it")
    _add(p, _catalog_flags, _output_flags)

    p = sub.add_parser("store", help="list what the embedding store holds")
    p.add_argument("--store", default=None, help="store folder (default $PRODREC_STORE or ~/.cache/prodrec/store)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("demo-catalog", help="write a small synthetic catalog (works offline)")
    p.add_argument("dir")
    p.add_argument("--n", type=_positive_int, default=240)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("fetch-data", help="download the Kaggle dataset with kagglehub (needs network)")
    p.add_argument("--dest", default="data/fashion-product-images-small")

    p = sub.add_parser("run-notebooks", help="execute the notebooks headless with papermill")
    _catalog_flags(p)
    p.add_argument("--out", required=True, help="folder for executed notebooks, figures and metrics")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="notebook parameter (VALUE parsed as JSON when it can be)")
    p.add_argument("--notebooks", default=None, help="folder of NN_*.ipynb (default: the repo's notebooks/)")
    p.add_argument("--only", action="append", default=None, help="run only notebooks starting with this")
    p.add_argument("--demo-if-missing", action="store_true",
                   help="when no catalog is found, write and use a synthetic demo catalog under --out")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("kaggle-stage", help="stage the Kaggle kernel and the kit's wheel (as a Kaggle dataset)")
    p.add_argument("dir")
    p.add_argument("--metadata", default=None, help="default: the kit's kaggle-metadata.json")
    p.add_argument("--owner", default=None, help="your Kaggle user name (owner of the kernel and the dataset)")
    p.add_argument("--wheel", default=None, help="stage this wheel instead of building one")

    p = sub.add_parser("notebooks", help="list the kit's notebooks, or copy them somewhere to edit")
    nb = p.add_subparsers(dest="action", required=True)
    nb.add_parser("list", help="where the notebooks run-notebooks uses are")
    c = nb.add_parser("copy", help="put editable copies of the notebooks in DIR")
    c.add_argument("dir")
    c.add_argument("--force", action="store_true", help="overwrite notebooks already in DIR")
    return ap


# ---------------------------------------------------------------------------------------------- helpers
def catalog_options(args: argparse.Namespace) -> dict[str, Any]:
    """The catalog flags as :func:`~prodrec.catalog.load_catalog` keyword arguments (unset ones left out)."""
    delim = getattr(args, "delimiter", None)
    out = {
        "id_column": args.id_column, "image_column": args.image_column, "image_pattern": args.image_pattern,
        "text_columns": args.text_columns, "label_columns": args.label_columns,
        "caption_columns": args.caption_columns, "delimiter": "\t" if delim in ("tab", "\\t") else delim,
    }
    return {k: v for k, v in out.items() if v is not None}


def _model(value: str) -> str | None:
    return None if value.lower() in NONE_WORDS else value


ARM_FLAGS = {"image": "image_model", "text": "text_model", "clip": "clip_model", "colour": "colour_model"}


def _arm_models(args: argparse.Namespace) -> tuple[dict[str, str | None], bool]:
    """Each arm's model (None: off) and whether the learned arm is wanted, from --arms and the --*-model flags."""
    models = {arm: _model(getattr(args, flag, "none")) for arm, flag in ARM_FLAGS.items()}
    if not args.arms:
        return models, False
    named = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in named if a not in (*ARM_FLAGS, LEARNED)]
    if unknown:
        raise ConfigError(f"unknown arm(s) {unknown} in --arms; choose from {[*ARM_FLAGS, LEARNED]}")
    for arm in models:
        models[arm] = (models[arm] or "auto") if arm in named else None
    inputs = [a for a in named if a != LEARNED]
    learned = not args.no_learned and (LEARNED in named or (args.command == "evaluate" and len(inputs) >= 2))
    return models, learned


def _check_modes(args: argparse.Namespace, wanted: Sequence[str]) -> None:
    """Refuse, before any work, modes that the requested arms cannot give."""
    from ..core.params import check_mode, check_weights

    models, learned = _arm_models(args)
    arms = [a for a, m in models.items() if m] + ([LEARNED] if learned else [])
    if not [a for a in arms if a != LEARNED]:
        raise ConfigError("every arm is off (--arms, or --image-model none --text-model none): nothing to rank with")
    for mode in wanted:
        check_mode(mode, arms)
    if getattr(args, "weights", None):
        check_weights(args.weights, arms)


def _experiment(args: argparse.Namespace, include_ids: tuple[str, ...] = (), k: int | None = None,
                modes: Sequence[str] | None = None, require_ids: bool = False) -> Experiment:
    from .experiment import build_experiment

    models, learned = _arm_models(args)
    labels = [c.strip() for c in args.labels.split(",") if c.strip()] if getattr(args, "labels", None) else None
    return build_experiment(
        args.data, args.n, args.seed,
        image_model=models["image"], text_model=models["text"], clip_model=models["clip"],
        colour_model=models["colour"], protocol=args.protocol, withheld=labels,
        learned={"epochs": args.learn_epochs, "seed": args.learn_seed, "max_train": args.max_train} if learned
        else False,
        calibration=getattr(args, "calibration", "auto"), index=args.index,
        image_weights=None if args.random_image_weights else "imagenet",
        resnet_weights=args.resnet_weights, store_dir=args.store, batch_size=args.batch_size,
        chunk_size=args.chunk_size, stratify=args.stratify, include_ids=include_ids,
        alpha=getattr(args, "alpha", 0.5), weights=getattr(args, "weights", None),
        catalog_options=catalog_options(args), k=k, modes=modes, require_ids=require_ids, progress=not args.quiet,
        engine=args.engine, engine_options=_engine_options(args),
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
    from ..core.provenance import save_json

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


# ---------------------------------------------------------------------------------------------- commands
def cmd_embed(args: argparse.Namespace) -> int:
    _check_out(args)
    _check_modes(args, [])
    exp = _experiment(args)
    models = exp.models()
    payload = {"products": len(exp.catalog), "models": models, "skipped_arms": exp.skipped,
               "store": exp.settings["store"]}
    lines = [f"{len(exp.catalog)} products; store {exp.settings['store']}"]
    for arm, m in models.items():
        if m:
            lines.append(f"  {arm}: {m['model_id']} ({m['dim']}-d; {m.get('loaded', 0)} from the store, "
                         f"{m.get('computed', 0)} computed; weights {m.get('weight_source')}; {m['failures']} failed)")
    lines.extend(f"  {arm}: left out ({why})" for arm, why in exp.skipped.items())
    prov = exp.provenance()
    _save(args, "embeddings.json", payload, prov)
    _emit(args, "\n".join(lines), {"provenance": prov, **payload})
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    _check_out(args)
    _check_modes(args, [args.mode])
    exp = _experiment(args, include_ids=(args.id,), k=args.k, modes=[args.mode], require_ids=True)
    df = exp.recommender.recommend(args.id, k=args.k, mode=args.mode, alpha=args.alpha, weights=args.weights)
    cols = list(dict.fromkeys([*(exp.catalog.schema.caption_columns or ()), *exp.catalog.label_columns]))
    lab = exp.labels
    q = lab.loc[str(args.id)]
    df = df.join(lab[cols], on="id")
    payload = {"query": {"id": str(args.id), **{c: q[c] for c in cols}}, "mode": args.mode, "k": args.k,
               "recommendations": df.to_dict(orient="records")}
    text = f"query {args.id}: " + " | ".join(str(q[c]) for c in cols) + f"\n{args.mode} top-{args.k}:\n"
    text += df.to_string(index=False, float_format=lambda v: f"{v:.3f}")
    prov = exp.provenance(query=str(args.id), k=args.k, mode=args.mode)
    _save(args, f"recommend-{args.id}-{args.mode}.json", payload, prov)
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
    if args.mode == "clip" and not _model(args.clip_model):
        raise ConfigError("--mode clip needs a CLIP checkpoint: --clip-model NAME|PATH|auto")
    # only the arm the search needs is embedded
    args.image_model = "none"
    if args.mode == "clip":
        args.text_model = "none"
    else:
        args.clip_model = "none"
    exp = _experiment(args, k=args.k, modes=[args.mode])
    df = exp.searcher().search(args.query, k=args.k, mode=args.mode, filters=filters, persist=True)
    prov = exp.provenance(query=args.query, k=args.k, mode=args.mode, filters=filters)
    records = df.to_dict(orient="records")
    _save(args, "search.json", records, prov)
    text = (f"{args.mode} search over {len(exp.recommender)} products: {args.query!r}"
            + (f" (filters {filters})" if filters else "") + "\n"
            + df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    _emit(args, text, {"provenance": prov, "results": records})
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation.runs import evaluate
    from ..evaluation.report import precision_table

    _check_out(args)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()] if args.modes else None
    _check_modes(args, modes or [])
    labels = [c.strip() for c in args.labels.split(",") if c.strip()] if args.labels else None
    exp = _experiment(args, k=args.k, modes=modes)
    res = evaluate(exp.recommender, exp.catalog, k=args.k, modes=modes, columns=labels, alpha=args.alpha,
                   weights=args.weights, n_boot=args.n_boot, seed=args.seed, progress=not args.quiet,
                   protocol=args.protocol)
    prov = exp.provenance(k=args.k, alpha=args.alpha, weights=args.weights, protocol=args.protocol)
    records = res.to_dict(orient="records")
    _save(args, "metrics.json", records, prov)
    other = res[res.metric != "precision"].pivot(index="metric", columns="mode", values="value").round(3)
    m = exp.models()
    arms = ", ".join(f"{a}: {s['model_id']}" for a, s in m.items() if s)
    text = (
        f"{len(exp.recommender)} products, k={args.k}, seed={args.seed}, protocol {args.protocol}; {arms}\n"
        f"precision@{args.k} (share of recommendations with the query's label):\n"
        f"{precision_table(res).to_string()}\n\n{other.to_string()}"
    )
    _emit(args, text, {"provenance": prov, "results": records})
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..data.catalog import load_catalog
    from ..data.locate import find_data_dir

    _check_out(args)
    cat = load_catalog(find_data_dir(args.data), **catalog_options(args))
    payload = {**cat.report.to_dict(), "schema": cat.schema.to_dict()}
    if args.out:
        from ..core.provenance import provenance

        _save(args, "load-report.json", payload, provenance(cat))
    _emit(args, str(cat.report), payload)
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    from ..embed.embedding import open_store

    st = open_store(args.store)
    entries = st.entries()
    lines = [f"store {st.root}: {len(entries)} model(s)"]
    lines += [f"  {e['arm']:<6} {e['model_id']:<45} {e['dim']:>5}-d {e['products']:>8} products "
              f"({e.get('failures', 0)} failed)" for e in entries]
    _emit(args, "\n".join(lines), {"store": str(st.root), "entries": entries})
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..data.demo import write_demo_catalog

    out = write_demo_catalog(args.dir, n=args.n, seed=args.seed)
    print(f"wrote a synthetic catalog of {args.n} products to {out} (try: prodrec evaluate --data {out})")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from ..data.locate import fetch_data

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
    from ..data.locate import find_data_dir
    from ..core.errors import DataNotFound
    from .notebooks import find_notebooks, run_notebooks

    params = _parse_params(args.parameter)
    folder = Path(args.notebooks) if args.notebooks else None
    notebooks = find_notebooks(folder, args.only)
    try:
        data = find_data_dir(args.data)
    except DataNotFound as exc:
        if not args.demo_if_missing:
            raise
        from ..data.demo import write_demo_catalog

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
    from .notebooks import kaggle_stage

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
    from .notebooks import copy_notebooks, find_notebooks, resources_root

    if args.action == "list":
        for path in find_notebooks():
            print(path)
        print(resources_root() / "notebooks" / "kaggle_kernel.ipynb")
        return 0
    for path in copy_notebooks(args.dir, overwrite=args.force):
        print(f"copied {path}")
    print(f"run them with: prodrec run-notebooks --notebooks {args.dir} --out outputs/NAME")
    return 0


def quiet_libraries() -> None:
    """Silence the progress bars the kit's libraries draw themselves (tqdm in Hugging Face and
    transformers' "Loading weights", TensorFlow's C++ log); set before they are imported, and inherited by
    notebook kernels that run-notebooks starts."""
    os.environ["TQDM_DISABLE"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    if "transformers" in sys.modules:  # imported already: switch its bars off directly
        sys.modules["transformers"].utils.logging.disable_progress_bar()


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "embed": cmd_embed,
    "recommend": cmd_recommend,
    "search": cmd_search,
    "evaluate": cmd_evaluate,
    "load-report": cmd_report,
    "store": cmd_store,
    "demo-catalog": cmd_demo,
    "fetch-data": cmd_fetch,
    "run-notebooks": cmd_run_notebooks,
    "kaggle-stage": cmd_kaggle_stage,
    "notebooks": cmd_notebooks,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits 2 with a usage line on a malformed flag
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if getattr(args, "quiet", False) and not args.verbose:
        quiet_libraries()
    if not args.verbose:
        for noisy in ("sentence_transformers", "httpx", "urllib3", "huggingface_hub", "tensorflow", "absl",
                      "filelock", "transformers", "faiss", "faiss.loader"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted; finished embedding chunks are kept and the next run resumes", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `prodrec ... | head`: the reader left; end quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - one clear line for users, traceback with --debug
        if args.debug:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and not isinstance(exc, ProdrecError) and exc.args else exc
        print(f"prodrec {args.command}: error: {type(exc).__name__}: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
