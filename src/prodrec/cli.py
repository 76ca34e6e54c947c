"""``prodrec`` command line: embed, recommend, evaluate, demo-catalog, fetch-data, run-notebooks, kaggle-stage.

Every command prints a human-readable result, or JSON with ``--json``; errors are one clear line
(exit code 2) instead of a traceback, unless ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from . import __version__

log = logging.getLogger("prodrec")


def _common(p: argparse.ArgumentParser, models: bool = True) -> None:
    p.add_argument("--data", help="catalog folder (styles.csv + images/) or CSV; default: $PRODREC_DATA, "
                   "/kaggle/input/fashion-product-images-small, ./data/fashion-product-images-small")
    p.add_argument("--n", type=int, default=None, help="sample this many products (default: all)")
    p.add_argument("--seed", type=int, default=0, help="sample seed (default 0)")
    p.add_argument("--stratify", default=None, help="keep the shares of this column in the sample")
    if models:
        p.add_argument("--image-model", default="auto", help="auto | resnet50 | efficientnet-lite0 | none")
        p.add_argument("--text-model", default="auto",
                       help="auto | a sentence-transformers name or folder | none")
        p.add_argument("--random-image-weights", action="store_true",
                       help="random image weights (timing and shape checks only; recorded in every output)")
        p.add_argument("--resnet-weights", default=None,
                       help="path to resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
        p.add_argument("--store", default=None, help="embedding store folder (default $PRODREC_STORE or "
                       "~/.cache/prodrec/store)")
        p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", default=None, help="write the result (JSON) under this folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="prodrec", description=__doc__.splitlines()[0])
    ap.add_argument("--version", action="version", version=f"prodrec {__version__}")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("embed", help="compute (or load) image and text embeddings into the store")
    _common(p)
    p.add_argument("--chunk-size", type=int, default=1024, help="items per resumable chunk")

    p = sub.add_parser("recommend", help="top-k recommendations for one product")
    _common(p)
    p.add_argument("--id", required=True, help="query product id")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--mode", default="fused", choices=["image", "text", "fused", "rrf"])
    p.add_argument("--alpha", type=float, default=0.5, help="image weight in fused mode")

    p = sub.add_parser("evaluate", help="precision@k, coverage and diversity of every mode")
    _common(p)
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--labels", default="articleType,baseColour,subCategory,gender")
    p.add_argument("--modes", default=None, help="comma list (default: all available)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs")

    p = sub.add_parser("demo-catalog", help="write a small synthetic catalog (works offline)")
    p.add_argument("dir")
    p.add_argument("--n", type=int, default=240)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("fetch-data", help="download the Kaggle dataset with kagglehub (needs network)")
    p.add_argument("--dest", default="data/fashion-product-images-small")

    p = sub.add_parser("load-report", help="load a catalog and print what was wrong with it")
    _common(p, models=False)

    from .notebooks import add_cli as add_notebook_cli

    add_notebook_cli(sub)
    return ap


def _emit(args: argparse.Namespace, text: str, payload: Any) -> None:
    if getattr(args, "json", False):
        print(json.dumps(payload, indent=2, default=str))
    else:
        print(text)


def _experiment(args: argparse.Namespace, include_ids: tuple[Any, ...] = ()) -> Any:
    from .pipeline import build_experiment

    none = ("", "none", "off")
    return build_experiment(
        args.data, args.n, args.seed,
        image_model=None if args.image_model.lower() in none else args.image_model,
        text_model=None if args.text_model.lower() in none else args.text_model,
        image_weights=None if args.random_image_weights else "imagenet",
        resnet_weights=args.resnet_weights, store_dir=args.store, batch_size=args.batch_size,
        chunk_size=getattr(args, "chunk_size", 1024),
        stratify=args.stratify, include_ids=include_ids, alpha=getattr(args, "alpha", 0.5),
        progress=not args.quiet,
    )


def _save(args: argparse.Namespace, name: str, payload: Any, prov: dict[str, Any]) -> str | None:
    if not args.out:
        return None
    from .provenance import save_json

    return str(save_json(Path(args.out) / name, payload, prov))


def cmd_embed(args: argparse.Namespace) -> int:
    exp = _experiment(args)
    models = exp.models()
    payload = {"products": len(exp.catalog), "models": models, "store": exp.settings["store"]}
    lines = [f"{len(exp.catalog)} products; store {exp.settings['store']}"]
    for arm, m in models.items():
        if m:
            lines.append(f"  {arm}: {m['model_id']} ({m['dim']}-d, {m.get('cache')}, weights {m.get('weight_source')}, "
                         f"{m['failures']} failed)")
    _save(args, "embeddings.json", payload, exp.provenance())
    _emit(args, "\n".join(lines), payload)
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    exp = _experiment(args, include_ids=(args.id,))
    df = exp.recommender.recommend(args.id, k=args.k, mode=args.mode, alpha=args.alpha)
    lab = exp.labels
    q = lab.loc[exp.catalog.row(args.id)["id"]]
    cols = [c for c in ("productDisplayName", "articleType", "baseColour") if c in lab.columns]
    df = df.join(lab[cols], on="id")
    payload = {"query": {"id": q.name, **{c: q[c] for c in cols}}, "mode": args.mode, "k": args.k,
               "recommendations": df.to_dict(orient="records")}
    text = f"query {q.name}: " + " | ".join(str(q[c]) for c in cols) + f"\n{args.mode} top-{args.k}:\n"
    text += df.to_string(index=False, float_format=lambda v: f"{v:.3f}")
    _save(args, f"recommend-{args.id}-{args.mode}.json", payload, exp.provenance(query=args.id))
    _emit(args, text, payload)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, precision_table

    exp = _experiment(args)
    modes = args.modes.split(",") if args.modes else None
    res = evaluate(exp.recommender, exp.labels, k=args.k, modes=modes, columns=args.labels.split(","),
                   alpha=args.alpha, n_boot=args.n_boot, seed=args.seed, progress=not args.quiet)
    prov = exp.provenance(k=args.k, alpha=args.alpha)
    payload = {"provenance": prov, "results": res.to_dict(orient="records")}
    _save(args, "metrics.json", res.to_dict(orient="records"), prov)
    other = res[res.metric != "precision"].pivot(index="metric", columns="mode", values="value").round(3)
    m = exp.models()
    text = (
        f"{len(exp.recommender)} products, k={args.k}, seed={args.seed}; image: "
        f"{(m['image'] or {}).get('model_id')}, text: {(m['text'] or {}).get('model_id')}\n"
        f"precision@{args.k} (share of recommendations with the query's label):\n"
        f"{precision_table(res).to_string()}\n\n{other.to_string()}"
    )
    _emit(args, text, payload)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import write_demo_catalog

    out = write_demo_catalog(args.dir, n=args.n, seed=args.seed)
    print(f"wrote a synthetic catalog of {args.n} products to {out} (try: prodrec evaluate --data {out})")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from .data import fetch_data

    print(f"catalog ready at {fetch_data(args.dest)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .catalog import load_catalog
    from .data import find_data_dir

    cat = load_catalog(find_data_dir(args.data))
    _emit(args, str(cat.report), cat.report.to_dict())
    return 0


COMMANDS = {
    "embed": cmd_embed,
    "recommend": cmd_recommend,
    "evaluate": cmd_evaluate,
    "demo-catalog": cmd_demo,
    "fetch-data": cmd_fetch,
    "load-report": cmd_report,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("sentence_transformers", "httpx", "urllib3", "huggingface_hub", "tensorflow", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from .notebooks import COMMANDS as NB_COMMANDS

    handler = {**COMMANDS, **NB_COMMANDS}[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted; finished embedding chunks are kept and the next run resumes", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line for users, traceback with --debug
        if args.debug:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # KeyError's str() adds quotes
        print(f"prodrec {args.command}: error: {type(exc).__name__}: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
