"""Distributed embedding on Ray Data: ``prodrec embed --engine ray`` (the ``prodrec[scale]`` extra).

What runs where
---------------
* **Driver** (the process that runs ``prodrec embed`` or :func:`prodrec.embed.embedding.embed_arm`): loads the
  catalog, computes every product's input key (photo digests, sentence hashes), asks the per-product
  :class:`~prodrec.embed.store.EmbeddingStore` what is missing, and writes the vectors that come back, chunk by
  chunk. Store, lock and resume points are exactly those of the local engine: a run killed at any moment
  leaves whole chunks behind, and the next run (with either engine) computes only what is missing.
* **Actors** (a Ray Data actor pool, ``--workers`` of them): each builds the arm's encoder once, then
  decodes photos (or takes sentences) and encodes them batch by batch. Only the inputs of the missing
  products travel to the actors (a photo path, or a sentence), and only vectors and failure reasons come
  back. An undecodable photo comes back as a failure, as in the local engine.

The driver does not load the model (unless its vector size is only known from the model: a text model
outside the registry): the provenance saved with the vectors is what the first actor reports
(so a GPU actor records ``device: cuda``), plus the engine, the Ray address, workers, GPUs per worker and
the Ray version.

Pointing it at a cluster
------------------------
* No ``--address``: a local Ray is started on this machine (``num_cpus`` = its cores) and stopped at the
  end; a process that already called ``ray.init()`` (a notebook) keeps its own Ray.
* ``--address auto``: the cluster this machine belongs to (``ray start --head`` here, then ``ray start
  --address <head-ip>:6379`` on each other machine), or the one ``$RAY_ADDRESS`` names, which is what a
  driver started with ``ray job submit`` gets.
* ``--address ray://<head>:10001``: Ray Client, for KubeRay (the head service's ``client`` port, e.g.
  ``kubectl port-forward svc/<cluster>-head-svc 10001``) and managed Ray (Anyscale and the like).

Every worker node needs the same ``prodrec`` with the arm's extra installed (``pip install
'prodrec[scale,image]'``: bake it into the cluster image) and must see the catalog's photos **at the same
paths** as the driver (a shared mount: NFS, EFS, a KubeRay volume). A photo the driver can read but a
worker cannot stops the run with an error naming the path, instead of storing it as a failure.

GPUs
----
``--gpus-per-worker G`` gives each actor ``G`` GPUs (fractions share one GPU between actors); the encoders
pick CUDA by themselves when Ray hands them a device. Without ``--workers``, the pool has one actor per
CPU of the cluster, or as many GPU actors as its GPUs allow. CPU actors split the cluster's cores between
them (each actor's torch gets that many threads).
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .arms import ArmSpec, Resolved
from ..data.catalog import Catalog
from .encoders.base import Encoder, ImageEncoderLike, TextEncoderLike
from ..core.errors import ConfigError, MissingDependency, ProdrecError

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["RayCompute", "RayEngineError", "import_ray", "ray_compute", "start_ray"]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'prodrec[scale]'"
_MAX_BLOCKS = 2048  # blocks of the input dataset (whole batches each); more only adds scheduling overhead
_RAY_LOGGERS = ("ray", "ray.data")
#: Input kinds (:attr:`ArmSpec.input_kind`) the actors can embed: photo paths, or sentences.
_INPUT_KINDS = ("image", "text")
#: Environment forwarded to the actors of a cluster we connect to (a local Ray inherits the driver's).
_FORWARDED_ENV = ("PRODREC_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


class RayEngineError(ProdrecError, RuntimeError):
    """The Ray engine could not compute the vectors (a worker lacks the model or the photos, Ray failed)."""


def import_ray() -> ModuleType:
    """``ray`` with Ray Data, or :class:`MissingDependency` naming the extra that installs it."""
    try:
        import ray
        import ray.data  # Ray Data comes with the ray[data] extra
    except ImportError as exc:
        raise MissingDependency(
            f"--engine ray needs Ray Data ({exc}): {INSTALL_HINT}, or use --engine local"
        ) from exc
    return ray


def start_ray(address: str | None, levels: dict[str, int]) -> tuple[ModuleType, bool, dict[str, Any]]:
    """Start a local Ray, connect to the cluster at ``address``, or use the Ray this process already runs.

    Ray's loggers are set to ERROR (their INFO/WARNING chatter breaks progress bars); their old levels are
    put in ``levels`` for the caller to restore. Returns ``(ray, started, info)``: ``started`` says whether
    this call ran ``ray.init`` (the caller then shuts Ray down when done), ``info`` the address, cluster,
    whether a local Ray was started, and Ray's version (for provenance).
    """
    ray = import_ray()
    for name in _RAY_LOGGERS:
        logger = logging.getLogger(name)
        levels.setdefault(name, logger.level)
        logger.setLevel(logging.ERROR)
    if ray.is_initialized():
        started = False
    elif address is None:
        ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
                 logging_level=logging.ERROR, log_to_driver=False)
        started = True
    else:
        env = {k: os.environ[k] for k in _FORWARDED_ENV if k in os.environ}
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False,
                     runtime_env={"env_vars": env} if env else None)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(
                f"cannot connect to the Ray cluster at --address {address} ({exc}); start one with "
                "`ray start --head`, give its ray://host:10001 client address, or leave out --address "
                "for a local Ray"
            ) from exc
        started = True
    context = ray.get_runtime_context()
    info = {"address": address or "local", "cluster": getattr(context, "gcs_address", None),
            "started_local_ray": started and address is None, "version": ray.__version__}
    return ray, started, info


def ray_compute(
    spec: ArmSpec,
    catalog: Catalog,
    resolved: Resolved,
    *,
    batch_size: int,
    encoder: Encoder | None = None,
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float = 0.0,
) -> RayCompute:
    """A store ``compute`` function that embeds on a Ray Data actor pool.

    Parameters
    ----------
    spec : ArmSpec
        The arm. Its :attr:`~ArmSpec.input_kind` says what travels to the actors: ``"image"`` arms (image,
        clip, colour, any registered image arm) send photo paths, ``"text"`` arms sentences, both from
        :meth:`ArmSpec.inputs`; an arm that declares neither is refused.
    catalog : Catalog
        The products; positions given to the returned object index ``catalog``.
    resolved : Resolved
        The model, as :meth:`ArmSpec.resolve` gave it; each actor calls ``spec.build(resolved)`` once.
    batch_size : int
        Products per actor call (and per forward pass).
    encoder : Encoder, optional
        An already built encoder to ship to the actors (pickled) instead of building one there.
    address : str, optional
        None starts a local Ray (or uses the one this process already runs); ``"auto"`` or
        ``"ray://host:port"`` connects to a cluster.
    workers : int, optional
        Actors in the pool (default: one per CPU, or per ``gpus_per_worker`` GPUs).
    gpus_per_worker : float
        GPUs per actor (0: CPU actors).

    Returns
    -------
    RayCompute
        Call :meth:`RayCompute.prepare` with every missing position, then call it chunk by chunk;
        :meth:`RayCompute.close` when done. Nothing starts before ``prepare``.

    Raises
    ------
    MissingDependency
        If Ray Data is not installed.
    ConfigError
        If an option is out of range or the arm has no Ray support.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer))
                                or workers < 1):
        raise ConfigError(f"--workers must be a positive integer, got {workers!r}")
    gpus = float(gpus_per_worker or 0.0)
    if not math.isfinite(gpus) or gpus < 0:
        raise ConfigError(f"--gpus-per-worker must be 0 or more, got {gpus_per_worker!r}")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise ConfigError(f"--address must be 'auto', host:port or ray://host:port, got {address!r}")
    import_ray()
    return RayCompute(spec, catalog, resolved, batch_size=int(batch_size), encoder=encoder,
                      address=address.strip() if address else None, workers=workers, gpus_per_worker=gpus)


class RayCompute:
    """``compute(positions) -> (vectors, failures)`` backed by one streaming Ray Data job.

    :meth:`prepare` builds a dataset of the inputs of all missing products (in the order the store will
    ask for them) and starts streaming it through the actor pool; each call then takes exactly the rows
    of the positions it is given from that stream. See :func:`ray_compute` for the parameters.
    """

    def __init__(self, spec: ArmSpec, catalog: Catalog, resolved: Resolved, *, batch_size: int,
                 encoder: Encoder | None, address: str | None, workers: int | None,
                 gpus_per_worker: float) -> None:
        if spec.input_kind not in _INPUT_KINDS:  # what the actors know how to feed an encoder
            raise ConfigError(f"the {spec.name} arm has no Ray support (its spec declares no input kind "
                              f"{' or '.join(map(repr, _INPUT_KINDS))}); embed it with --engine local")
        self.kind = spec.input_kind
        self.inputs: Sequence[str] = spec.inputs(catalog)
        self.spec, self.resolved, self.batch_size = spec, resolved, batch_size
        self.address, self.workers, self.gpus_per_worker = address, workers, gpus_per_worker
        self._encoder_blob = _pickle_encoder(encoder) if encoder is not None else None
        self._ray: Any = None
        self._started = False  # whether we called ray.init (close() then stops a local Ray, or disconnects)
        self._stream: Iterator[dict[str, np.ndarray]] | None = None
        self._expected: set[int] = set()  # positions the stream has yet to deliver
        self._rows: dict[int, tuple[np.ndarray, str]] = {}  # delivered, not yet asked for
        self._described: dict[str, Any] | None = None
        self._levels: dict[str, int] = {}
        self._info: dict[str, Any] = {}

    # ------------------------------------------------------------------ the store's protocol
    def prepare(self, missing: np.ndarray) -> None:
        """Start (or connect to) Ray and stream the inputs of ``missing`` through the actor pool.

        Parameters
        ----------
        missing : np.ndarray
            Every position the following calls will ask for, in the order they will ask.
        """
        missing = np.asarray(missing, dtype=np.int64)
        self._start_ray()
        self._close_stream()
        self._stream = self._run(missing)
        self._expected = set(missing.tolist())
        self._rows = {}

    def __call__(self, positions: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
        """Vectors (float32 ``[len(positions), dim]``) and ``{local index: reason}`` of failed products."""
        want = np.asarray(positions, dtype=np.int64).tolist()
        if not set(want) <= self._expected | set(self._rows):
            log.debug("ray engine: positions outside the prepared stream; preparing them")
            self.prepare(np.asarray(want))
        waiting = {p for p in want if p not in self._rows}
        while waiting:
            waiting.difference_update(self._take(self._next_batch()))
        rows = [self._rows.pop(p) for p in want]
        dim = rows[0][0].shape[-1] if rows else 0
        vectors = np.stack([r[0] for r in rows]).astype(np.float32) if rows else np.zeros((0, dim), np.float32)
        return vectors, {j: why for j, (_, why) in enumerate(rows) if why}

    def describe(self) -> dict[str, Any]:
        """The encoder's provenance as the first actor built it, plus :attr:`engine_info`.

        Waits for the first batch when no actor has answered yet (call :meth:`prepare` first).
        """
        while self._described is None:
            if self._stream is None:
                raise RayEngineError("describe() needs a running Ray job: call prepare() first")
            self._take(self._next_batch())
        return {**self._described, **self.engine_info}

    @property
    def engine_info(self) -> dict[str, Any]:
        """``engine`` and ``ray`` (address, cluster, workers, CPUs and GPUs per worker, nodes, version)."""
        return {"engine": "ray", "ray": dict(self._info)}

    def close(self) -> None:
        """Stop the stream and, if this object started Ray, Ray too; restores Ray's log levels."""
        self._close_stream()
        if self._ray is not None and self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
        self._levels = {}

    # ------------------------------------------------------------------ internals
    def _start_ray(self) -> None:
        if self._ray is not None and self._ray.is_initialized():
            return
        self._ray, self._started, self._info = start_ray(self.address, self._levels)

    def _plan(self) -> tuple[int, float, float]:
        """(actors, CPUs per actor, GPUs per actor) for this cluster."""
        ray = self._ray
        total = ray.cluster_resources()
        cpus, gpus = float(total.get("CPU", 0)), float(total.get("GPU", 0))
        node_cpus = [float(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
        per_gpu = self.gpus_per_worker
        if self.workers is not None:
            actors = int(self.workers)
        elif per_gpu > 0:
            actors = int(gpus // per_gpu)
            if actors < 1:
                raise ConfigError(
                    f"--gpus-per-worker {per_gpu:g} but the Ray cluster has {gpus:g} GPUs; drop "
                    "--gpus-per-worker for CPU actors, or give --workers N to wait for GPU nodes (autoscaler)"
                )
        else:
            actors = max(1, int(cpus))
        if per_gpu > 0 and actors * per_gpu > gpus:
            if self._started and self.address is None:
                raise ConfigError(f"{actors} workers x {per_gpu:g} GPUs need {actors * per_gpu:g} GPUs; this "
                                  f"machine has {gpus:g}. Lower --workers or --gpus-per-worker")
            log.warning("%d workers x %g GPUs exceed the cluster's %g GPUs: actors wait for the autoscaler",
                        actors, per_gpu, gpus)
        if cpus and actors > cpus:  # more actors than cores: share them, so that every actor starts
            per_actor = cpus / actors
        else:  # split the cores (each actor's torch gets that many threads), within the largest node
            largest = max(node_cpus, default=cpus) or 1.0
            per_actor = max(1.0, min(math.floor(cpus / actors) if cpus else 1.0, largest))
        self._info.update({"workers": actors, "cpus_per_worker": per_actor, "gpus_per_worker": per_gpu,
                           "nodes": len(node_cpus)})
        return actors, per_actor, per_gpu

    def _run(self, missing: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
        """The stream of encoded batches (``pos``, ``vector``, ``failure``, ``describe``, ``error``)."""
        ray = self._ray
        from ray.data import ActorPoolStrategy

        actors, cpus, gpus = self._plan()
        items: list[dict[str, Any]] = [{"pos": int(p), "input": str(self.inputs[p] or "")} for p in missing.tolist()]
        if self.kind == "image":  # what the driver can read; a worker that cannot read it is misconfigured
            for item in items:
                item["readable"] = bool(item["input"]) and os.path.isfile(item["input"])
        blocks = max(1, min(_MAX_BLOCKS, math.ceil(len(items) / self.batch_size)))
        ds = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
            _EncodeBatches,
            fn_constructor_kwargs={"kind": self.kind, "spec": self.spec, "resolved": self.resolved,
                                   "encoder_blob": self._encoder_blob, "batch_size": self.batch_size},
            compute=ActorPoolStrategy(size=actors),
            batch_size=self.batch_size,
            batch_format="numpy",
            num_cpus=cpus,
            num_gpus=gpus or None,
        )
        ctx = ds.context  # this dataset's own copy of the DataContext
        ctx.execution_options.preserve_order = True  # rows arrive in the order of ``missing``: chunk by chunk
        ctx.enable_progress_bars = False  # the store shows one bar over products
        ctx.print_on_execution_start = False
        log.info("ray engine: %d products on %d actor(s) (%g CPU, %g GPU each), Ray %s at %s",
                 len(items), actors, cpus, gpus, ray.__version__, self._info.get("cluster"))
        return iter(ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2))

    def _take(self, batch: dict[str, np.ndarray]) -> list[int]:
        """Keep a delivered batch's rows until they are asked for; returns their positions."""
        positions = batch["pos"].tolist()
        for p, vector, failure in zip(positions, batch["vector"], batch["failure"].tolist()):
            if p not in self._expected:
                raise RayEngineError(f"the Ray job returned product position {p}, which it was not given")
            self._expected.discard(p)
            self._rows[p] = (vector, str(failure))
        return positions

    def _next_batch(self) -> dict[str, np.ndarray]:
        if self._stream is None:
            raise RayEngineError("the Ray job is not running: call prepare() with the missing positions first")
        try:
            batch = next(self._stream)
        except StopIteration:
            raise RayEngineError(f"the Ray job ended with {len(self._expected)} product(s) not returned") from None
        except ProdrecError:
            raise
        except Exception as exc:  # Ray's own errors: a dead actor or node, an unschedulable pool...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RayEngineError(
                f"the Ray job failed ({type(exc).__name__}: {first}); what was computed is stored, a rerun "
                "resumes. Ray's logs: /tmp/ray/session_latest/logs on the head node"
            ) from exc
        errors = [e for e in batch["error"].tolist() if e]
        if errors:
            raise RayEngineError(errors[0])
        if self._described is None:
            described = [d for d in batch["describe"].tolist() if d]
            if described:
                self._described = json.loads(described[0])
        return batch

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        close = getattr(stream, "close", None)
        if close is not None:
            close()  # a generator: stops the streaming executor and its actors


class _EncodeBatches:
    """The actor: builds the encoder once, then encodes batches of photo paths or sentences.

    Errors are returned in the ``error`` column instead of raised, so that the driver can stop with one
    clear message rather than Ray's retries and tracebacks.
    """

    def __init__(self, kind: str, spec: ArmSpec, resolved: Resolved, encoder_blob: bytes | None,
                 batch_size: int) -> None:
        self.kind, self.batch_size = kind, batch_size
        self.error = ""
        self.described = ""
        self.encoder: Encoder | None = None
        try:
            self.encoder = pickle.loads(encoder_blob) if encoder_blob is not None else spec.build(resolved)
            self.described = json.dumps(self.encoder.describe(), default=str)
        except Exception as exc:  # noqa: BLE001 - reported to the driver with the node it happened on
            self.error = (f"a Ray worker on {_host()} could not build the {spec.name} model "
                          f"{resolved.model_id} ({type(exc).__name__}: {exc}); install the same prodrec "
                          f"with the model's extra (e.g. 'prodrec[scale,{spec.name}]') on every Ray node")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pos = np.asarray(batch["pos"], dtype=np.int64)
        n = len(pos)
        inputs = [str(x) for x in batch["input"].tolist()]
        failure = np.full(n, "", dtype=object)
        error = ""
        vectors: np.ndarray | None = None
        if self.encoder is None:
            error = self.error
        elif self.kind == "image":
            unseen = [p for p, ok in zip(inputs, batch["readable"].tolist()) if ok and not os.path.isfile(p)]
            if unseen:
                error = (f"a Ray worker on {_host()} cannot read {len(unseen)} photo(s) the driver can, e.g. "
                         f"{unseen[0]}; every Ray node must see the catalog at the same path (a shared mount)")
            else:
                enc = cast(ImageEncoderLike, self.encoder)
                vectors, failed = enc.encode_with_failures(inputs, batch_size=self.batch_size, progress=False)
                for j, why in failed.items():
                    failure[j] = why
        else:
            enc_t = cast(TextEncoderLike, self.encoder)
            vectors = enc_t.encode(inputs, batch_size=self.batch_size, progress=False)
        dim = self.encoder.dim if self.encoder is not None else 1
        if vectors is None:
            vectors = np.zeros((n, dim), np.float32)
        described = np.full(n, "", dtype=object)
        if n:
            described[0] = self.described
        return {"pos": pos, "vector": np.asarray(vectors, dtype=np.float32), "failure": failure,
                "describe": described, "error": np.full(n, error, dtype=object)}


def _host() -> str:
    import socket

    return socket.gethostname()


def _pickle_encoder(encoder: Encoder) -> bytes:
    """``encoder`` pickled for the actors; classes defined outside prodrec (a notebook's, a test's) travel
    by value, since the workers may not be able to import their module."""
    from ray import cloudpickle

    module = sys.modules.get(type(encoder).__module__)
    by_value = module is not None and not module.__name__.startswith(("prodrec", "__main__"))
    if by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        return cast(bytes, cloudpickle.dumps(encoder))
    except Exception as exc:
        raise ConfigError(f"the encoder {encoder.model_id} cannot be sent to Ray workers ({exc}); "
                          "give a model name instead of an encoder object") from exc
    finally:
        if by_value:
            cloudpickle.unregister_pickle_by_value(module)
