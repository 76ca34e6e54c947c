"""The arm registry: one entry per arm, and everything that names an arm reads it.

An :class:`ArmEntry` says how the arm's vectors are made (its :class:`~prodrec.embed.arms.ArmSpec`
factory, or ``trained`` for the learned arm) and how the rest of the kit presents and runs it: whether it is
built unless asked (``default_model``) or only on request, the help of its ``--<name>-model`` flag, the
smallest batch and chunk it is embedded in, whether it embeds free text too (search by description), and
the title and colour galleries give it. The vocabulary of arm names and ranking modes, the CLI's model
flags and ``--arms``, :func:`~prodrec.run.experiment.build_experiment`'s ``models=``, the settings keys
(``<name>_model``), galleries and the Ray engine all come from here.

Adding an arm is one entry::

    from prodrec.embed.arms import TrainingFreeImageArm
    from prodrec.embed.registry import ArmEntry, register_arm

    register_arm(ArmEntry("shape", spec=lambda: TrainingFreeImageArm("shape", ShapeEncoder),
                          title="shape (gradient histogram)", colour="#8c8c3c"))

after which ``--arms image,shape``, ``--mode shape`` and ``build_experiment(models={"shape": "auto"})``
work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..core.errors import ConfigError
from ..core.params import suggest
from ..core.vocab import FUSION_MODES, LEARNED
from .arms import ArmSpec, ClipArm, ColourArm, ImageArm, TextArm

#: Ranking modes are strings: an arm's name or a fusion mode (see :func:`modes`).
Mode = str


@dataclass(frozen=True)
class ArmEntry:
    """One arm of the registry.

    Calling an entry builds its spec: ``ARMS["text"](fields=[...])`` is a :class:`~prodrec.embed.arms.TextArm`.
    """

    name: str
    #: Builds the arm's :class:`ArmSpec` (keyword options: ``fields`` for the text arm). None: a trained arm.
    spec: Callable[..., ArmSpec] | None
    #: Title in galleries and plots.
    title: str
    #: Colour in plots (any matplotlib colour).
    colour: str = "#4c4c4c"
    #: The model used when nothing is said: ``"auto"`` builds the arm by default; None makes it opt-in
    #: (built only when named in ``--arms`` / ``models=`` or given a model).
    default_model: str | None = None
    #: Help of the ``--<name>-model`` flag.
    model_help: str = "auto | a model name"
    #: What its model is called in messages ("no CLIP checkpoint could be loaded").
    model_noun: str = "model"
    #: The smallest batch and resumable chunk the arm is embedded in (cheap arms go in larger steps).
    min_batch: int = 1
    min_chunk: int = 1
    #: The arm's model also embeds free text, so descriptions can be searched against it.
    text_query: bool = False
    #: Trained on the other arms' vectors (the learned arm) rather than embedded by a spec.
    trained: bool = False

    def __post_init__(self) -> None:
        if not self.name.replace("_", "").isalnum() or not self.name[:1].isalpha() or self.name != self.name.lower():
            raise ConfigError(f"an arm name is lower-case letters, digits and '_', starting with a letter; "
                              f"got {self.name!r}")
        if self.name in FUSION_MODES:
            raise ConfigError(f"{self.name!r} is a fusion mode, not an arm name")
        if (self.spec is None) != self.trained:
            raise ConfigError(f"arm {self.name!r}: give a spec factory, or trained=True (not both)")

    def __call__(self, **options: Any) -> ArmSpec:
        if self.spec is None:
            raise ConfigError(f"the {self.name} arm is trained on the other arms' vectors; it has no encoder spec")
        return self.spec(**options)

    @property
    def opt_in(self) -> bool:
        """Built only on request (no default model)."""
        return self.default_model is None

    @property
    def settings_key(self) -> str:
        """The key of its model in an experiment's settings (``image_model``)."""
        return f"{self.name}_model"

    @property
    def flag(self) -> str:
        """Its CLI model flag (``--image-model``)."""
        return f"--{self.name.replace('_', '-')}-model"

    def batch_sizes(self, batch_size: int, chunk_size: int) -> tuple[int, int]:
        """The (batch, chunk) this arm is embedded in when the user asked for ``batch_size``/``chunk_size``."""
        return max(batch_size, self.min_batch), max(chunk_size, self.min_chunk)


#: Arm name -> entry, in the order arms are built, listed and plotted.
ARMS: dict[str, ArmEntry] = {
    e.name: e
    for e in (
        ArmEntry("image", ImageArm, "image (ResNet/EfficientNet)", "#4c72b0", default_model="auto",
                 model_help="auto | resnet50 | efficientnet-lite0 | none"),
        ArmEntry("text", TextArm, "text (sentence embedding)", "#dd8452", default_model="auto",
                 model_help="auto | a sentence-transformers name or folder | none", min_batch=64, min_chunk=64,
                 text_query=True),
        ArmEntry("clip", ClipArm, "clip (photos and text in one space)", "#da8bc3",
                 model_help="none (default) | auto | a CLIP checkpoint (hub name, e.g. "
                 "patrickjohncyh/fashion-clip, or folder): adds the clip arm", text_query=True,
                 model_noun="CLIP checkpoint"),
        ArmEntry("colour", ColourArm, "colour (foreground histogram)", "#c44e52",
                 model_help="none (default) | auto | colour-hist: adds the training-free colour arm",
                 min_batch=256, min_chunk=1024),
        ArmEntry(LEARNED, None, "learned (supervised on catalog labels)", "#937860", trained=True),
    )
}

#: Titles and colours of what plots show beside the arms.
EXTRA_TITLES: dict[str, str] = {"fused": "fused", "rrf": "reciprocal-rank fusion", "random": "random"}
EXTRA_COLOURS: dict[str, str] = {"random": "#aaaaaa", "fused": "#55a868", "rrf": "#8172b3"}


def register_arm(entry: ArmEntry, *, replace: bool = False) -> ArmEntry:
    """Add ``entry`` to :data:`ARMS` (``replace=True`` to redefine an existing name)."""
    if entry.name in ARMS and not replace:
        raise ConfigError(f"an arm named {entry.name!r} is already registered; pass replace=True to redefine it")
    ARMS[entry.name] = entry
    return entry


def arm_entry(name: str) -> ArmEntry:
    """The entry of arm ``name``; an unknown name raises one :class:`ConfigError` line with a suggestion."""
    try:
        return ARMS[name]
    except KeyError:
        raise ConfigError(f"unknown arm {name!r}; known arms: {', '.join(ARMS)}{suggest(name, ARMS)}") from None


def arm_spec(name: str, **options: Any) -> ArmSpec:
    """The :class:`ArmSpec` of arm ``name`` (see :func:`arm_entry`)."""
    return arm_entry(name)(**options)


def arm_names(*, trained: bool = True) -> tuple[str, ...]:
    """Every registered arm name (without trained arms when ``trained=False``)."""
    return tuple(n for n, e in ARMS.items() if trained or not e.trained)


def modes() -> tuple[str, ...]:
    """Every ranking mode: the arm names, then the fusion modes."""
    return (*ARMS, *FUSION_MODES)


def text_query_arms() -> tuple[str, ...]:
    """Arms whose model embeds free text (search by description)."""
    return tuple(n for n, e in ARMS.items() if e.text_query)


def title(mode: str) -> str:
    """A mode's title for galleries and plots."""
    entry = ARMS.get(mode)
    return entry.title if entry is not None else EXTRA_TITLES.get(mode, mode)


def colour(mode: str) -> str:
    """A mode's colour in plots."""
    entry = ARMS.get(mode)
    return entry.colour if entry is not None else EXTRA_COLOURS.get(mode, "#4c4c4c")


def requested_models(models: Mapping[str, str | None] | None = None, arms: Any = None) -> dict[str, str | None]:
    """Each embedded arm's model (None: off): ``models`` entries win; else the entry's default. With ``arms``
    (names), exactly those arms are on (a named arm without a model uses ``auto``)."""
    models = dict(models or {})
    unknown = [a for a in models if a not in ARMS or ARMS[a].trained]
    if unknown:
        known = ", ".join(arm_names(trained=False))
        raise ConfigError(f"unknown arm(s) {unknown} in models; known: {known}{suggest(unknown[0], ARMS)}")
    out = {name: models.get(name, e.default_model) for name, e in ARMS.items() if not e.trained}
    if arms is not None:
        named = list(arms)
        out = {name: ((m or "auto") if name in named else None) for name, m in out.items()}
    return out
