"""``prodrec`` command line: every argparse definition of the kit lives here; the commands are in
:mod:`prodrec.run.commands`.

Commands: embed, recommend, export, report, search, evaluate, load-report, fetch-images, store, demo-catalog,
fetch-data, run-notebooks, kaggle-stage, notebooks. Flag choices come from the library's vocabulary
(:mod:`prodrec.core.vocab`) and the arm registry (:mod:`prodrec.embed.registry`: one ``--<arm>-model`` flag
per registered arm), values are checked by the same functions the library uses (:mod:`prodrec.core.params`).
Errors are one line (exit code 2), with a suggestion for a misspelled choice, instead of a traceback or a page
of usage, unless ``--debug``; a closed pipe (``prodrec ... | head``) ends quietly. ``--quiet`` keeps the log
to errors and sums the warnings up in one line.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from .._version import __version__
from ..core import params
from ..core.errors import ConfigError, ProdrecError
from ..core.vocab import AUTO_APPROX_KIND, AUTO_EXACT_MAX, CALIBRATIONS, ENGINES, INDEX_KINDS, PROTOCOLS, TASKS
from ..data import fetch
from ..data.formats import FORMATS
from ..data.schema import TEXT_CLEAN
from ..embed.encoders.backends import BACKENDS, PRECISIONS
from ..embed.registry import ARMS, arm_names, modes, text_query_arms
from ..evaluation.metrics import check_metrics, metric_names
from ..evaluation.runs import TUNABLE
from ..evaluation.significance import TESTS
from ..rank.rules import DEFAULT_DUPLICATE_THRESHOLD, Rules
from . import commands

log = logging.getLogger("prodrec")


# ---------------------------------------------------------------------------------------------- parsing
class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line with a suggestion, not a page of usage."""

    def error(self, message: str) -> NoReturn:
        found = re.search(r"invalid choice: '?([^')]*)'? \(choose from (.*)\)", message)
        if found:
            choices = [c.strip(" '\"") for c in found.group(2).split(",")]
            message += params.suggest(found.group(1), choices)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _typed(check: Callable[[str], Any], expected: str | None = None) -> Callable[[str], Any]:
    """An argparse type from a library check (the library decides what is valid): a refused value becomes
    argparse's one-line error, ``expected <what>, got <value>`` (or the check's own message)."""

    def convert(text: str) -> Any:
        try:
            return check(text)
        except (ConfigError, ValueError) as exc:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}" if expected else str(exc)) from None

    convert.__name__ = getattr(check, "__name__", "value")
    return convert


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"expected an integer, got {text!r}") from None


def _seconds_value(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ConfigError(f"expected a positive number of seconds, got {text!r}")
    return value


def _count_value(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise ConfigError(f"expected a whole number >= 0, got {text!r}")
    return value


_positive_int = _typed(lambda t: params.check_positive_int("the value", _int(t)), "a positive integer")
_seconds = _typed(_seconds_value, "a positive number of seconds")
_count = _typed(_count_value, "a whole number >= 0")
_unit_float = _typed(params.check_alpha, "a number within [0, 1]")
_weights = _typed(params.parse_weights)


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
    g.add_argument("--keep-without-photo", action="store_true", help="keep products without a usable photo "
                   "for the arms they have (text, search); the default for any catalog but the Kaggle layout, "
                   "which studies products with photos")
    g.add_argument("--format", choices=FORMATS, default=None,
                   help="catalog file format (default: by extension, .gz/.zst included, then by content)")
    g.add_argument("--text-clean", choices=TEXT_CLEAN, default=None,
                   help="markup in text columns: auto (default: values with HTML tags or entities become plain "
                   "text) | html (parse every value) | none (keep text as written)")


def _sample_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=_positive_int, default=None, help="sample this many products (default: all)")
    p.add_argument("--seed", type=int, default=0, help="sample seed (default 0)")
    p.add_argument("--stratify", default=None, help="keep the shares of this column in the sample")


def _model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models", "one --<arm>-model flag per arm of the registry")
    for entry in ARMS.values():
        if not entry.trained:
            g.add_argument(entry.flag, default=entry.default_model or "none", help=entry.model_help)
    g.add_argument("--arms", default=None, help=f"comma list of arms to build ({', '.join(arm_names())}), e.g. "
                   "image,text,colour (arms "
                   "not named are off; named ones use their --*-model or auto). Adding 'learned' trains the "
                   "learned arm; on evaluate, --arms with two or more arms adds it by itself (--no-learned)")
    g.add_argument("--no-learned", action="store_true", help="never add the learned arm")
    g.add_argument("--learn-epochs", type=_positive_int, default=30, help="learned arm: training epochs")
    g.add_argument("--learn-seed", type=int, default=0, help="learned arm: training seed")
    g.add_argument("--max-train", type=_positive_int, default=None, help="learned arm: train on at most this "
                   "many products outside the sample, drawn with --seed (default: all of them, which embeds them "
                   "all once)")
    g.add_argument("--protocol", default="full", choices=PROTOCOLS,
                   help="full (default): every text column in the product sentence; withheld: the label "
                   "columns (or --labels) removed from every sentence, so a score is not the label read back")
    g.add_argument("--random-image-weights", action="store_true",
                   help="random image weights (timing and shape checks only; recorded in every output)")
    g.add_argument("--resnet-weights", default=None,
                   help="path to resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    g.add_argument("--store", default=None, help="embedding store folder (default $PRODREC_STORE or "
                   "~/.cache/prodrec/store)")
    g.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="where the models run: auto (default: torch on a GPU; on a CPU OpenVINO or ONNX Runtime "
                   "when installed, pip install 'prodrec[fast]', for large jobs or once exported) | torch (the model's "
                   "own framework: PyTorch, TensorFlow for resnet50) | onnx | openvino. Exports are kept in "
                   "<store>/models; fp32 gives the framework's vectors on every backend")
    g.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="fp32 (default, exact) | int8: quantised, calibrated and checked on the catalog; "
                   "refused when it moves precision@5 by more than 0.01 (its own store key)")
    g.add_argument("--batch-size", type=_positive_int, default=32)
    g.add_argument("--chunk-size", type=_positive_int, default=1024, help="items per resumable chunk")
    g = p.add_argument_group("index", "how many-query searches find neighbours")
    g.add_argument("--index", default="exact", choices=INDEX_KINDS,
                   help="exact (default; numpy, ties by id) | ivf | hnsw (FAISS, approximate, kept beside the "
                   f"store) | auto (exact below {AUTO_EXACT_MAX:,} products, {AUTO_APPROX_KIND} above)")
    g = p.add_argument_group("engine", "where missing vectors are computed (the store is the same either way)")
    g.add_argument("--engine", default="local", choices=ENGINES,
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
    p.add_argument("--quiet", action="store_true", help="no progress bars and no log lines; the kit's warnings "
                   "are summed up in one line")


def _store_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=None, help="embedding store folder, whose images/ holds fetched photos "
                   "(default $PRODREC_STORE or ~/.cache/prodrec/store)")


def _fetch_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fetching", "how image URLs are downloaded")
    g.add_argument("--concurrency", type=_positive_int, default=fetch.DEFAULT_CONCURRENCY,
                   help=f"downloads at once (default {fetch.DEFAULT_CONCURRENCY})")
    g.add_argument("--timeout", type=_seconds, default=fetch.DEFAULT_TIMEOUT,
                   help=f"seconds to connect and between bytes (default {fetch.DEFAULT_TIMEOUT:g})")
    g.add_argument("--retries", type=_count, default=fetch.DEFAULT_RETRIES,
                   help=f"more tries after a timeout, a lost connection, 5xx or 429 (default {fetch.DEFAULT_RETRIES})")
    g.add_argument("--max-bytes", type=_positive_int, default=fetch.DEFAULT_MAX_BYTES,
                   help=f"largest photo accepted, in bytes (default {fetch.DEFAULT_MAX_BYTES:,})")


def _fusion_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alpha", type=_unit_float, default=0.5, help="image weight of two-arm fusion (0..1)")
    p.add_argument("--weights", type=_weights, default=None,
                   help="per-arm fusion weights, e.g. image=0.7,text=0.3 (overrides --alpha)")
    p.add_argument("--calibration", default="auto", choices=CALIBRATIONS,
                   help="score scale of fusion: raw cosines (the paper's), or each arm standardised per query; "
                   "auto: raw for image+text, zscore when other arms are fused")


def _threshold_value(text: str) -> float:
    return Rules.make(exclude_duplicates=float(text)).exclude_duplicates  # type: ignore[return-value]


def _rule_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("rules", "what a list may hold, applied inside the ranking (k products come back "
                             "whenever k qualify)")
    g.add_argument("--same", action="append", default=None, metavar="COL",
                   help="only products sharing the query's value of COL, e.g. gender (repeatable)")
    g.add_argument("--different", action="append", default=None, metavar="COL",
                   help="only products with another value of COL, e.g. articleType: complete the look (repeatable)")
    g.add_argument("--where", action="append", default=None, metavar="COL=VAL",
                   help="only products whose COL is VAL, e.g. in_stock=true (case-insensitive; repeatable: values of "
                   "one column are alternatives, columns all apply)")
    g.add_argument("--exclude-duplicates", nargs="?", const=DEFAULT_DUPLICATE_THRESHOLD, default=None,
                   type=_typed(_threshold_value, "a cosine within (0, 1]"), metavar="THRESHOLD",
                   help="collapse near-identical products to the best-ranked one: the same name, or a cosine of "
                   f"at least THRESHOLD in every arm of the mode (default {DEFAULT_DUPLICATE_THRESHOLD})")
    g.add_argument("--diversity", type=_unit_float, default=None, metavar="LAMBDA",
                   help="MMR re-ranking over a deeper pool: LAMBDA 1 = relevance only, 0 = spread only (e.g. 0.7)")


def _add(p: argparse.ArgumentParser, *groups: Callable[[argparse.ArgumentParser], None]) -> None:
    for group in groups:
        group(p)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="prodrec", description="Image- and text-based product recommendation: embed a catalog, recommend, "
        "search by description, evaluate, and run the notebooks. Any catalog: see the catalog flags.")
    ap.add_argument("--version", action="version", version=f"prodrec {__version__}")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    ap.add_argument("--verbose", action="store_true", help="show every library's progress bars and log lines")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("embed", help="fill the per-product embedding store (computes only what is missing)")
    _add(p, _catalog_flags, _sample_flags, _model_flags, _output_flags)
    p.add_argument("--fetch-images", action="store_true",
                   help="first download the catalog's image URLs that the store's images/ lacks (see fetch-images)")

    p = sub.add_parser("recommend", help="top-k recommendations for one product")
    _add(p, _catalog_flags, _sample_flags, _model_flags, _output_flags)
    p.add_argument("--id", required=True, action="append", help="query product id, as written in the catalog; "
                   "repeat it for several liked products (a composed query)")
    p.add_argument("-k", type=_positive_int, default=5)
    p.add_argument("--mode", default="fused", choices=modes())
    _fusion_flags(p)
    g = p.add_argument_group("composed queries", "more like the --id products, less like the --not ones, plus a "
                             "text modifier (Rocchio per arm on the fusion's scale)")
    g.add_argument("--not", dest="not_ids", action="append", default=[], metavar="ID",
                   help="a product to move away from (repeatable)")
    g.add_argument("--text", default=None, help='a modifier, e.g. "in red": embedded by the arms that read text, '
                   "mapped into the image/colour arms through the catalog's label prototypes")
    g.add_argument("--text-weight", type=float, default=1.0, help="weight of the text modifier against the "
                   "products (default 1: each arm's fusion weight)")
    _rule_flags(p)

    p = sub.add_parser("export", help="top-k of every product (or --ids) to a Parquet / CSV / JSON Lines table, "
                       "resumable; --update keeps it fresh after the catalog changed")
    _add(p, _catalog_flags, _sample_flags, _model_flags)
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", default=None, metavar="TABLE",
                     help="the table: recs.parquet | recs.csv | recs.jsonl (format by extension; provenance in the "
                     "Parquet metadata or TABLE.provenance.json; checkpoints in TABLE.state/)")
    out.add_argument("--update", default=None, metavar="TABLE",
                     help="bring an exported TABLE up to date with the catalog as it is now, with the settings it "
                     "was exported with (only new and changed products are embedded)")
    p.add_argument("-k", type=_positive_int, default=None, help="list length (default 10)")
    p.add_argument("--modes", default=None, help=f"comma list of {', '.join(modes())} (default: fused, or the "
                   "only arm)")
    p.add_argument("--ids", default=None, metavar="FILE", help="only these query ids (one per line) instead of "
                   "every product")
    p.add_argument("--arm-scores", action="store_true", default=None, help="add each arm's cosine (<arm>_score)")
    p.add_argument("--captions", nargs="?", const="", default=None, metavar="COLS",
                   help="add the recommended product's caption columns (bare: the catalog's; or a comma list)")
    p.add_argument("--block", type=_positive_int, default=None, help="queries per checkpoint block (default 2048)")
    p.add_argument("--json", action="store_true", help="print strict JSON instead of text")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no log lines")
    _fusion_flags(p)
    _rule_flags(p)

    p = sub.add_parser("report", help="a static HTML page of image grids for a sample of a recommendations "
                       "table's queries (self-contained: photos inlined)")
    p.add_argument("table", help="recs.parquet | recs.csv | recs.jsonl (from prodrec export, or any table with "
                   "query_id, id[, rank, score, mode])")
    p.add_argument("--html", required=True, metavar="OUT", help="the page to write, e.g. report.html")
    p.add_argument("--n", type=_positive_int, default=50, help="queries shown (a seeded sample; default 50)")
    p.add_argument("--seed", type=int, default=0, help="sample seed (default 0)")
    p.add_argument("--thumb", type=_positive_int, default=128, help="thumbnail size in pixels (default 128)")
    _add(p, _catalog_flags, _store_flag)
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("search", help="products matching a description (text arm, or CLIP: text -> photos)")
    p.add_argument("query", help='a description, e.g. "white sports shoes for women"')
    _add(p, _catalog_flags, _sample_flags, _model_flags, _output_flags)
    p.add_argument("-k", type=_positive_int, default=5)
    p.add_argument("--mode", default="text", choices=text_query_arms(),
                   help="text: the text arm's model against product sentences; clip: CLIP's text tower "
                   "against product photos (needs --clip-model)")
    p.add_argument("--filter", action="append", default=[], metavar="COLUMN=VALUE",
                   help="keep products whose column equals the value, e.g. gender=Women (repeatable)")

    p = sub.add_parser("evaluate", help="precision@k (or any registered metric), coverage and diversity of every "
                       "mode")
    _add(p, _catalog_flags, _sample_flags, _model_flags, _output_flags)
    p.add_argument("-k", type=_positive_int, default=None, help="list length (default 5; with --from: the "
                   "table's)")
    _fusion_flags(p)
    p.add_argument("--labels", default=None, help="comma list of label columns to score (default: the "
                   "catalog's label columns)")
    p.add_argument("--modes", default=None, help=f"comma list of {', '.join(modes())} (default: all available)")
    p.add_argument("--from", dest="from_table", default=None, metavar="TABLE",
                   help="score this recommendations table (recs.parquet|.csv|.jsonl, from prodrec export or any "
                   "system: query_id, id[, rank, mode]) instead of ranking; diversity in the arms the flags build "
                   "(--image-model none --text-model none: labels only)")
    p.add_argument("--n-boot", type=_positive_int, default=1000, help="bootstrap resamples for the CIs")
    p.add_argument("--metrics", type=_typed(lambda t: check_metrics(t, backends=False)), default=["precision"],
                   help=f"comma list of per-query metrics from the registry: {', '.join(metric_names())} "
                   "(default: precision; ndcg, map, mrr, recall need pip install 'prodrec[eval]')")
    p.add_argument("--grade-levels", type=_positive_int, default=None, help="label columns that grade relevance "
                   "for ndcg/map/mrr/recall: the first gives grade 1, matching the first two grade 2... (default 2)")
    p.add_argument("--significance", nargs="?", const="student", default=None, choices=TESTS,
                   help="also test every pair of modes on every metric: student (paired t-test, the default "
                   "when the flag is bare) or fisher (randomisation), Holm-adjusted (needs 'prodrec[eval]')")
    g = p.add_argument_group("tasks", "what a query is: item (a product -> similar products, default), label "
                             "(a label value as text -> products with it) and name (a product name -> its photos), "
                             "the KAGL leaderboard's tasks, or composed (a product + a colour word)")
    g.add_argument("--task", default="item", choices=TASKS,
                   help="item (default) | label (P@1, P@10, R@1, R@10, MRR; the text arm needs --protocol withheld) "
                   "| name (needs --clip-model) | composed (precision@k of X + 'C')")
    g.add_argument("--n-queries", type=_positive_int, default=None,
                   help="queries of the name task (default 2000) or the composed task (default 400)")
    g.add_argument("--query-seed", type=int, default=0, help="seed of the sampled names / composed queries")
    g.add_argument("--min-relevant", type=_positive_int, default=None,
                   help="composed task: a colour C is asked of X only where at least this many products of X's "
                   "type have C (default 5; lower it for a small sample)")
    p.add_argument("--tune", default=None, choices=TUNABLE,
                   help="choose the fusion on validation queries (a seeded half of the sample, --seed) and score "
                   "every mode, and the chosen weighting as fused_tuned, on the other half: alpha (the image "
                   "weight) or weights (a 0.1 grid over the arms); the objective is mean precision@k on the "
                   "first two labels")

    p = sub.add_parser("load-report", help="load a catalog and print what was wrong with it")
    _add(p, _catalog_flags, _output_flags, _store_flag)
    p.add_argument("--show-text", action="append", default=[], metavar="ID",
                   help="print the sentence this product gets (what the text arm reads; repeatable)")
    p.add_argument("--protocol", default="full", choices=PROTOCOLS,
                   help="withheld: also say how many label values are masked in the text, and show sentences so")
    p.add_argument("--labels", default=None, help="comma list of label columns to withhold (default: the "
                   "catalog's label columns)")

    p = sub.add_parser("fetch-images", help="download the catalog's image URLs into the store's images/ cache "
                       "(only what is missing or failed before); every failure named by id")
    _add(p, _catalog_flags, _output_flags, _store_flag, _fetch_flags)

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


_QUIET_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}


def quiet_libraries() -> Callable[[], None]:
    """Silence the progress bars the kit's libraries draw themselves (tqdm in Hugging Face and
    transformers' "Loading weights", TensorFlow's C++ log); set before they are imported, and inherited by
    notebook kernels that run-notebooks starts. Returns the function that puts everything back as it was,
    so that a program calling :func:`main` in-process (a test, a notebook) is not left silenced."""
    before = {k: os.environ.get(k) for k in (*_QUIET_ENV, "TF_CPP_MIN_LOG_LEVEL")}
    os.environ.update(_QUIET_ENV)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    hf_logging = sys.modules["transformers"].utils.logging if "transformers" in sys.modules else None
    bars_were_on = hf_logging is not None and hf_logging.is_progress_bar_enabled()
    if hf_logging is not None:  # imported already: switch its bars off directly
        hf_logging.disable_progress_bar()

    def restore() -> None:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if bars_were_on:  # (imported silenced meanwhile: huggingface_hub fixed its switch at import)
            hf_logging.enable_progress_bar()

    return restore


class _Silenced(logging.Handler):
    """Under ``--quiet``: the kit's warnings (and Python warnings) are kept here instead of printed, for one
    summary line at the end."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self.restore: Callable[[], None] = lambda: None

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.ERROR:
            text = record.getMessage().strip()
            self.messages.append(text.splitlines()[0] if text else record.name)

    def summary(self, command: str) -> str | None:
        """One line: how many warnings were not shown, and the first of them."""
        if not self.messages:
            return None
        first = self.messages[0] if len(self.messages[0]) <= 200 else self.messages[0][:197] + "..."
        return (f"prodrec {command}: {len(self.messages)} warning(s) not shown (--quiet; run without it to see "
                f"them); the first: {first}")


def _logging(args: argparse.Namespace) -> _Silenced | None:
    """Log lines to stderr (unless the caller configured logging); with ``--quiet`` only errors are printed
    and warnings are counted by the returned handler."""
    quiet = bool(getattr(args, "quiet", False)) and not args.verbose
    root = logging.getLogger()
    if not root.handlers:  # as logging.basicConfig: a program that set up logging keeps its own
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.ERROR if quiet else logging.NOTSET)
        root.addHandler(handler)
        root.setLevel(logging.DEBUG if args.debug else logging.INFO)
    if not args.verbose:
        for noisy in ("sentence_transformers", "httpx", "httpcore", "urllib3", "huggingface_hub", "tensorflow",
                      "absl", "filelock", "transformers", "faiss", "faiss.loader"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if not quiet:
        return None
    silenced = _Silenced()
    silenced.restore = quiet_libraries()
    root.addHandler(silenced)
    logging.captureWarnings(True)  # Python warnings become log records: counted, not printed
    return silenced


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "embed": commands.cmd_embed,
    "recommend": commands.cmd_recommend,
    "export": commands.cmd_export,
    "report": commands.cmd_html_report,
    "search": commands.cmd_search,
    "evaluate": commands.cmd_evaluate,
    "load-report": commands.cmd_report,
    "fetch-images": commands.cmd_fetch_images,
    "store": commands.cmd_store,
    "demo-catalog": commands.cmd_demo,
    "fetch-data": commands.cmd_fetch,
    "run-notebooks": commands.cmd_run_notebooks,
    "kaggle-stage": commands.cmd_kaggle_stage,
    "notebooks": commands.cmd_notebooks,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits 2 with a usage line on a malformed flag
    silenced = _logging(args)
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
    finally:
        if silenced is not None:
            logging.getLogger().removeHandler(silenced)
            logging.captureWarnings(False)
            silenced.restore()
            line = silenced.summary(args.command)
            if line:
                print(line, file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
