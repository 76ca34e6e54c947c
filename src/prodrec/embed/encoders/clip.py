"""CLIP (the paper's future scope): photos and text in one space, so a description can rank photos.

:class:`ClipEncoder` loads any CLIP checkpoint in the Hugging Face transformers format, by hub name or
local folder: ``openai/clip-vit-base-patch32``, the fashion checkpoint ``patrickjohncyh/fashion-clip``, a
fine-tuned copy of your own, or a Kaggle input folder. It is an image encoder (the photo arm ``clip``:
``encode_with_failures(paths)``) and a text encoder (``encode(sentences)``: the text tower, for search).
Photos go through the kit's decoding (any mode to RGB, EXIF rotation, bomb guard), resized to the vision
tower's input size and normalised with the checkpoint's image mean and standard deviation (the full
square photo; CLIP's own processor crops the centre instead).

No pretrained CLIP can be downloaded on an offline machine; :func:`write_tiny_random_clip` writes a tiny,
randomly initialised checkpoint (marked as such in its config) that exercises the same loading and encoding
path, and every output made with it says ``weights: random``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...core.net import reachable
from ...core.errors import MissingDependency, ModelUnavailable
from .backends import BackendImageEncoder, BackendRequest, torch_device
from .base import l2_normalize
from .export import ExportError, export_torch, key_of, runtime_version, save_probe

log = logging.getLogger(__name__)

ALIASES = {
    "clip-vit-b-32": "openai/clip-vit-base-patch32",
    "clip": "openai/clip-vit-base-patch32",
    "fashion-clip": "patrickjohncyh/fashion-clip",
}
#: OpenAI CLIP's image normalisation, used when a checkpoint has no preprocessor config.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: Set in the config of checkpoints written by :func:`write_tiny_random_clip`.
RANDOM_MARK = "prodrec_random_init"


def resolve_clip_model(name: str) -> tuple[str, str, str]:
    """(model id, folder or hub name to load, weight source) for a CLIP request, without loading it.

    A local folder is used as it is; a hub name from the Hugging Face cache, else downloaded when
    huggingface.co answers within 3 s. Otherwise :class:`ModelUnavailable` names the ways to supply it.
    The id ends in ``/random`` for a checkpoint marked as randomly initialised, else ``/pretrained``.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelUnavailable(f"{path} is not a transformers checkpoint (no config.json)")
        folder = path.resolve()
        return f"clip:{folder.name}/{_weights_kind(folder)}", str(folder), f"path:{folder}"
    repo = ALIASES.get(name.lower(), name)
    try:
        from huggingface_hub import snapshot_download

        cached = snapshot_download(repo, local_files_only=True)
        return f"clip:{repo}/{_weights_kind(Path(cached))}", cached, f"hf-cache:{cached}"
    except Exception:  # noqa: BLE001 - not cached (or no hub client)
        pass
    if reachable("huggingface.co"):
        return f"clip:{repo}/pretrained", repo, "download:huggingface.co"
    raise ModelUnavailable(
        f"CLIP model {repo!r} is not in the Hugging Face cache and huggingface.co is unreachable. Supply it in "
        "one of these ways:\n"
        f"  1. on a machine with internet: `huggingface-cli download {repo}`, then copy ~/.cache/huggingface here;\n"
        "  2. pass a local folder holding the checkpoint (config.json, model weights, tokenizer files): "
        "--clip-model PATH;\n"
        "  3. on Kaggle, attach a dataset or model holding the checkpoint and pass its /kaggle/input/... folder.\n"
        "CLIP is optional: without --clip-model the kit uses its image and text arms."
    )


def _weights_kind(folder: Path) -> str:
    config = _local_config(str(folder)) or {}
    return "random" if config.get(RANDOM_MARK) else "pretrained"


def clip_dim(folder: str) -> int | None:
    """The projection size of a local checkpoint (None when it is not local yet)."""
    config = _local_config(folder)
    return None if config is None else int(config.get("projection_dim", 512))


class ClipEncoder(BackendImageEncoder):
    """A transformers CLIP model: image tower for product photos, text tower for descriptions.

    ``backend``: ``torch`` (default here), ``onnx`` / ``openvino`` (both towers exported once, the photo
    normalisation inside the image graph; needs the checkpoint in a local folder), or ``auto``; see
    :mod:`prodrec.embed.encoders.backends`.
    """

    name = "clip"
    image_graph = "image"

    def __init__(self, model: str = "openai/clip-vit-base-patch32", device: str | None = None,
                 backend: BackendRequest | str | None = "torch") -> None:
        super().__init__()
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise MissingDependency(
                "the CLIP arm needs torch and transformers: pip install 'prodrec[image,text]'"
            ) from exc
        self._id, self._load_from, self.weight_source = resolve_clip_model(model)
        self.model_name = self._id.rsplit("/", 1)[0]
        self._local = not self.weight_source.startswith("download:")
        self.tokenizer = AutoTokenizer.from_pretrained(self._load_from, local_files_only=self._local)
        self.model: Any = None
        config = _local_config(self._load_from)
        if config is None:  # a download: the model itself says what it is
            self._load(device)
            config = self.model.config.to_dict()
        self._configure(config)
        if not self._open_backend(backend, device, graphs=("image", "text")):
            self._load(device)
        log.info("clip: %s (%d-d, %s weights) from %s on %s (%s)", self.model_name, self.dim, self.weights,
                 self.weight_source, self.device, self.backend.name)

    def _configure(self, config: dict[str, Any]) -> None:
        self.weights = "random" if config.get(RANDOM_MARK) else "pretrained"
        if self.weights == "random" and "randomly initialised" not in self.weight_source:
            self.weight_source += " (randomly initialised test checkpoint: not a real CLIP)"
        self.dim = int(config.get("projection_dim", 512))  # transformers' defaults where a config omits them
        self.input_size = int((config.get("vision_config") or {}).get("image_size", 224))
        self.max_length = int(min((config.get("text_config") or {}).get("max_position_embeddings", 77), 77))

    def _load(self, device: str | None = None) -> None:
        """Load the torch model (once): for the torch backend, or to export it."""
        if self.model is not None:
            return
        try:
            import torch
            from transformers import CLIPModel
        except ImportError as exc:
            raise MissingDependency(
                "the CLIP arm needs torch and transformers: pip install 'prodrec[image,text]'"
            ) from exc
        self._torch = torch
        self.model = CLIPModel.from_pretrained(self._load_from, local_files_only=self._local).eval()
        self.device = device or torch_device(torch)
        self.model.to(self.device)
        mean, std = _image_stats(self._load_from, self._local)
        self._mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)

    @property
    def base_model_id(self) -> str:
        return self._id

    @property
    def export_key(self) -> str:
        return key_of(self._id, self._load_from)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "checkpoint": self.model_name}

    @staticmethod
    def _features(out: Any) -> Any:
        """transformers 5 returns model outputs (projected features in ``pooler_output``); 4.x a tensor."""
        return out.pooler_output if hasattr(out, "pooler_output") else out

    def _image_features(self, pixels: Any) -> Any:
        """uint8 NHWC tensor -> projected image features (what the image graph traces)."""
        x = pixels.permute(0, 3, 1, 2).float()
        x = (x / 255.0 - self._mean) / self._std
        return self._features(self.model.get_image_features(pixel_values=x))

    def _text_features(self, input_ids: Any, attention_mask: Any) -> Any:
        return self._features(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))

    def _framework_forward(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.require(batch, requirements="W")).to(self.device)
            return self._image_features(x).float().cpu().numpy()

    def _tokens(self, sentences: Sequence[str]) -> dict[str, np.ndarray]:
        tok = self.tokenizer(list(sentences), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="np")
        return {k: np.asarray(tok[k], dtype=np.int64) for k in ("input_ids", "attention_mask")}

    def encode(self, sentences: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Text-tower vectors of ``sentences`` (L2-normalised), comparable with the photo vectors."""
        out = np.zeros((len(sentences), self.dim), dtype=np.float32)
        for i in range(0, len(sentences), batch_size):
            feeds = self._tokens(sentences[i : i + batch_size])
            if self.backend.exported:
                out[i : i + len(feeds["input_ids"])] = self.backend.runtimes["text"].run(feeds)
                continue
            torch = self._torch
            with torch.inference_mode():
                feats = self._text_features(*(torch.from_numpy(feeds[k]).to(self.device)
                                              for k in ("input_ids", "attention_mask")))
            out[i : i + len(feats)] = feats.float().cpu().numpy()
        return l2_normalize(out)

    def export_onnx(self, folder: Path) -> dict[str, Any]:
        """``image.onnx`` (uint8 photos in, normalisation inside) and ``text.onnx`` (token ids and mask in)."""
        if not self._local or not Path(self._load_from).is_dir():
            raise ExportError(f"exporting CLIP needs the checkpoint in a local folder (it is {self._load_from})")
        self._load("cpu")
        torch, encoder = self._torch, self

        class Tower(torch.nn.Module):
            def __init__(self, text: bool) -> None:
                super().__init__()
                self.net, self.text = encoder.model, text

            def forward(self, *args: Any) -> Any:
                return encoder._text_features(*args) if self.text else encoder._image_features(*args)

        pixels = self.probe_pixels()
        tokens = self._tokens(["a probe description", "white sports shoes for women, size 8, with laces"])
        with torch.inference_mode():
            text_out = self._text_features(*(torch.from_numpy(tokens[k]) for k in ("input_ids", "attention_mask")))
        save_probe(folder, {"image": ({"pixels": pixels}, self._framework_forward(pixels)),
                            "text": (tokens, text_out.float().numpy())})
        export_torch(Tower(False).eval(), (torch.from_numpy(pixels),), folder / "image.onnx", ["pixels"],
                     {"pixels": {0: "batch"}})
        export_torch(Tower(True).eval(), tuple(torch.from_numpy(tokens[k]) for k in ("input_ids", "attention_mask")),
                     folder / "text.onnx", ["input_ids", "attention_mask"],
                     {k: {0: "batch", 1: "tokens"} for k in ("input_ids", "attention_mask")})
        return {"weight_source": self.weight_source, "framework": runtime_version("torch"), "exporter": "torch.onnx"}


def _local_config(folder: str) -> dict[str, Any] | None:
    """A local checkpoint's config.json (None when it is not local yet)."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _image_stats(load_from: str, local: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The checkpoint's image mean and std (preprocessor_config.json), else OpenAI CLIP's."""
    try:
        if Path(load_from).is_dir():
            cfg_path = Path(load_from) / "preprocessor_config.json"
        else:
            from huggingface_hub import hf_hub_download

            cfg_path = Path(hf_hub_download(load_from, "preprocessor_config.json", local_files_only=local))
        cfg = json.loads(cfg_path.read_text())
        return tuple(cfg["image_mean"]), tuple(cfg["image_std"])
    except Exception:  # noqa: BLE001 - no processor config: the standard CLIP statistics
        return CLIP_MEAN, CLIP_STD


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE tokenizers (GPT-2, CLIP) use for the bytes 0-255."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def write_tiny_random_clip(path: str | os.PathLike[str], image_size: int = 32, dim: int = 16, seed: int = 0) -> Path:
    """Write a tiny, randomly initialised CLIP checkpoint (model, tokenizer, preprocessor config) that loads
    through :class:`ClipEncoder` exactly as a real one does; its config is marked, so every output made with
    it records ``weights: random``. For offline smoke runs and tests, never for results."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # a byte-level BPE vocabulary with no merges: every byte is a token (alone and word-final)
    chars = _byte_symbols()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": i + len(chars) for i, c in enumerate(chars)})
    bos, eos = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": bos, "<|endoftext|>": eos})
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt")).save_pretrained(path)
    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=bos, eos_token_id=eos,
                         pad_token_id=eos),
        vision_config=dict(image_size=image_size, patch_size=8, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2),
        projection_dim=dim,
    )
    setattr(cfg, RANDOM_MARK, True)
    CLIPModel(cfg).save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "size": {"shortest_edge": image_size},
         "crop_size": {"height": image_size, "width": image_size}, "image_processor_type": "CLIPImageProcessor"}))
    return path
