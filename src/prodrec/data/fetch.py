"""Product photos given as http(s) URLs: downloaded once into a content-addressed cache beside the store.

``<store>/images/<sha256>.<ext>`` holds each downloaded photo under the hash of its bytes (two URLs of one
photo share a file), and ``<store>/images/index.json`` maps every URL tried to its file, or to why it
failed. :func:`fetch_images` fills the cache with an httpx client: bounded concurrency, connect/read
timeouts, retries with exponential backoff on timeouts, connection errors, 5xx and 429 (a numeric
``Retry-After`` is honoured, capped), redirects followed, a cap on the body size (checked on the declared
length and while streaming), and a full decode of every body (Pillow) before it is kept. A re-run fetches
only the URLs that are not cached yet or failed before. With ``PRODREC_OFFLINE=1``, or when no host can be
reached at all, nothing is tried beyond that and one line says so, naming the products.

:func:`~prodrec.data.catalog.load_catalog` reads the cache (``image_cache=``): a URL that was fetched
points at its cached file; one that was not is counted, by id, in the load report.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from ..core.errors import ConfigError
from ..core.io import atomic_write, file_lock, read_json_object, write_json
from ..core.params import check_positive_int
from .images import DEFAULT_MAX_PIXELS, ImageError, check_image_bytes

if TYPE_CHECKING:  # httpx is imported where a fetch runs: most loads fetch nothing (it costs ~0.5 s to import)
    import httpx

__all__ = ["FetchReport", "ImageCache", "fetch_images", "is_url", "name_ids"]

log = logging.getLogger(__name__)

#: The cache's folder inside the embedding store.
CACHE_DIR = "images"
DEFAULT_TIMEOUT = 15.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF = 0.5
DEFAULT_CONCURRENCY = 8
DEFAULT_MAX_BYTES = 20_000_000
#: The longest wait between two tries (a server's Retry-After included).
MAX_WAIT = 30.0
#: Statuses worth another try: the server is busy or failing for now.
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
#: Connection errors that say this machine has no network (no name lookup, no route), not that one host
#: refused.
_NO_NETWORK = re.compile(r"name resolution|name or service not known|nodename nor servname|getaddrinfo failed|"
                         r"network is unreachable|no route to host", re.IGNORECASE)
#: What a request was doing when it timed out, by httpx's exception.
_TIMEOUTS = {"ConnectTimeout": "connecting", "ReadTimeout": "waiting for data", "WriteTimeout": "sending",
             "PoolTimeout": "waiting for a free connection"}
#: Why a URL has no cached file when nothing was ever tried for it.
NOT_FETCHED = "not fetched yet"
USER_AGENT = "prodrec-image-fetch (+https://pypi.org/project/prodrec/)"


def is_url(value: object) -> bool:
    """Whether ``value`` is an http(s) URL (what :func:`fetch_images` downloads)."""
    return isinstance(value, str) and value.strip().lower().startswith(("http://", "https://"))


def offline_reason() -> str | None:
    """Why fetching is off (``PRODREC_OFFLINE`` set), or None."""
    value = os.environ.get("PRODREC_OFFLINE", "")
    return f"PRODREC_OFFLINE={value}" if value not in ("", "0") else None


def name_ids(ids: list[str], shown: int = 5) -> str:
    """``'a', 'b', 'c', 'd', 'e' and 12 more`` for messages."""
    head = ", ".join(repr(i) for i in ids[:shown])
    return head + (f" and {len(ids) - shown} more" if len(ids) > shown else "")


class ImageCache:
    """The downloaded photos (``<sha256>.<ext>``) and their index (URL -> file, or the last failure)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()
        self.index_path = self.root / "index.json"

    def __repr__(self) -> str:
        return f"ImageCache({self.root})"

    def entries(self) -> dict[str, dict[str, Any]]:
        """URL -> its record: ``{"file", "bytes", "content_type", "fetched_at"}``, or ``{"error", "at"}``."""
        if not self.index_path.is_file():
            return {}
        try:
            data = read_json_object(self.index_path)
        except ValueError as exc:
            log.warning("the image cache index %s is damaged (%s); the URLs will be fetched again",
                        self.index_path, exc)
            return {}
        urls = data.get("urls")
        return dict(urls) if isinstance(urls, dict) else {}

    def resolve(self, urls: list[str]) -> dict[str, Path | str]:
        """Each URL's cached file, or the reason it has none (``"not fetched yet"``, the last failure)."""
        entries = self.entries()
        out: dict[str, Path | str] = {}
        for url in urls:
            rec = entries.get(url)
            if rec is None:
                out[url] = NOT_FETCHED
            elif rec.get("file") and (self.root / str(rec["file"])).is_file():
                out[url] = self.root / str(rec["file"])
            else:
                out[url] = str(rec.get("error") or "cached file gone")
        return out

    def record(self, results: Mapping[str, dict[str, Any]]) -> None:
        """Merge ``results`` (URL -> record) into the index (under a lock: runs may share a store)."""
        if not results:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with file_lock(self.root / ".index.lock", what="the image cache"):
            entries = self.entries()
            entries.update(results)
            write_json(self.index_path, {"version": 1, "urls": entries})

    def store(self, data: bytes, ext: str) -> str:
        """Keep ``data`` as ``<sha256>.<ext>`` (written once, atomically); return the file name."""
        name = f"{hashlib.sha256(data).hexdigest()}.{ext}"
        path = self.root / name
        if not path.is_file():
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f: f.write(data))
        return name


@dataclass
class FetchReport:
    """What :func:`fetch_images` did: counts, every failure by product id with its reason, and whether it
    was offline."""

    cache: str
    urls: int = 0
    fetched: int = 0
    cached: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    offline: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line."""
        if self.offline:
            return (f"offline ({self.offline}): {len(self.failed)} image URL(s) not fetched: "
                    f"{name_ids(list(self.failed))}")
        line = (f"image URLs: {self.urls}; {self.fetched} fetched, {self.cached} already cached, "
                f"{len(self.failed)} failed")
        return line + (f": {name_ids(list(self.failed))}" if self.failed else "") + f" (cache {self.cache})"

    def lines(self, limit: int | None = None) -> list[str]:
        """The summary, then one line per failure (id: reason), the first ``limit`` of them."""
        out = [self.summary()]
        if self.offline:
            return out
        failures = list(self.failed.items())
        out += [f"  {pid}: {why}" for pid, why in failures[:limit]]
        if limit is not None and len(failures) > limit:
            out.append(f"  ... and {len(failures) - limit} more (--json, or {self.cache}/index.json)")
        return out


@dataclass(frozen=True)
class _Options:
    timeout: float
    retries: int
    backoff: float
    max_bytes: int
    max_pixels: int


class _Failure(Exception):
    def __init__(self, reason: str, transient: bool = False, network: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.transient, self.network = reason, transient, network


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB" if n >= 1e4 else f"{n} bytes"


def _wait(attempt: int, backoff: float, retry_after: str | None) -> float:
    if retry_after and retry_after.strip().isdigit():
        return min(float(retry_after), MAX_WAIT)
    return min(backoff * 2**attempt, MAX_WAIT)


def _body(response: httpx.Response, opts: _Options) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > opts.max_bytes:
        raise _Failure(f"body of {_size(int(declared))} exceeds the cap of {_size(opts.max_bytes)}")
    buf = bytearray()
    for chunk in response.iter_bytes():
        buf += chunk
        if len(buf) > opts.max_bytes:
            raise _Failure(f"body exceeds the cap of {_size(opts.max_bytes)} (stopped reading)")
    return bytes(buf)


def _get(client: httpx.Client, url: str, opts: _Options) -> tuple[bytes, str]:
    """One GET of ``url`` with retries; the body and its content type, or :class:`_Failure`."""
    import httpx

    failure = _Failure("not tried")
    for attempt in range(opts.retries + 1):
        retry_after = None
        try:
            with client.stream("GET", url) as response:
                status = response.status_code
                if status >= 400:
                    retry_after = response.headers.get("retry-after")
                    phrase = response.reason_phrase or ""
                    raise _Failure(f"HTTP {status} {phrase}".strip(), transient=status in RETRY_STATUS)
                return _body(response, opts), response.headers.get("content-type", "")
        except _Failure as exc:
            failure = exc
        except httpx.TimeoutException as exc:
            doing = _TIMEOUTS.get(type(exc).__name__, "")
            failure = _Failure(f"timed out after {opts.timeout:g} s {doing}".strip(), transient=True)
        except httpx.TooManyRedirects:
            failure = _Failure("too many redirects")
        except httpx.ConnectError as exc:
            failure = _Failure(f"cannot connect: {exc or type(exc).__name__}", transient=True,
                               network=_NO_NETWORK.search(str(exc)) is not None)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            failure = _Failure(f"connection broken: {exc or type(exc).__name__}", transient=True)
        except httpx.HTTPError as exc:  # an invalid URL, an unsupported protocol...
            failure = _Failure(f"{type(exc).__name__}: {exc}")
        if not failure.transient or attempt == opts.retries:
            break
        time.sleep(_wait(attempt, opts.backoff, retry_after))
    if failure.transient and opts.retries:
        failure.reason += f" (after {opts.retries + 1} tries)"
    raise failure


def _fetch_one(client: httpx.Client, cache: ImageCache, url: str, opts: _Options) -> dict[str, Any]:
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    try:
        data, content_type = _get(client, url, opts)
        try:
            ext = check_image_bytes(data, url, opts.max_pixels)
        except ImageError as exc:
            kind = content_type.split(";")[0].strip() or "no content type"
            raise _Failure(f"not a usable image ({kind}, {_size(len(data))}): {exc.reason}") from None
    except _Failure as exc:
        return {"error": exc.reason, "at": now, "network": exc.network}
    return {"file": cache.store(data, ext), "bytes": len(data), "content_type": content_type, "fetched_at": now}


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def fetch_images(
    urls: Mapping[str, str],
    cache: ImageCache | str | os.PathLike[str],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
    transport: httpx.BaseTransport | None = None,
) -> FetchReport:
    """Download the photos ``urls`` (product id -> URL) that ``cache`` lacks; report every failure by id.

    Parameters
    ----------
    urls:
        Product id -> http(s) URL; several ids may share a URL (it is fetched once).
    cache:
        An :class:`ImageCache` or its folder (``<store>/images``).
    concurrency, timeout, retries, backoff:
        At most ``concurrency`` downloads at once; ``timeout`` seconds to connect and between bytes;
        ``retries`` more tries after a timeout, a connection error, a 5xx or a 429, waiting ``backoff``,
        2x, 4x... seconds (capped at 30 s; a numeric ``Retry-After`` wins).
    max_bytes, max_pixels:
        Bodies above ``max_bytes`` are refused (declared or streamed); images declaring more than
        ``max_pixels`` are refused as decompression bombs.
    transport:
        An httpx transport to use instead of the network (tests, proxies).

    Already cached URLs are not fetched again; failed ones are tried again. Offline (``PRODREC_OFFLINE``
    set) nothing is fetched: every uncached URL is reported failed and the report says why in one line.
    """
    check_positive_int("concurrency", concurrency)
    if not timeout > 0 or retries < 0 or backoff < 0 or max_bytes < 1:
        raise ConfigError("fetch_images needs timeout > 0, retries >= 0, backoff >= 0 and max_bytes >= 1; got "
                          f"timeout={timeout}, retries={retries}, backoff={backoff}, max_bytes={max_bytes}")
    cache = cache if isinstance(cache, ImageCache) else ImageCache(cache)
    ids_of: dict[str, list[str]] = {}
    for pid, url in urls.items():
        if not is_url(url):
            raise ConfigError(f"product {pid!r}: {url!r} is not an http(s) URL")
        ids_of.setdefault(url.strip(), []).append(str(pid))
    known = cache.resolve(list(ids_of))
    todo = [u for u, hit in known.items() if not isinstance(hit, Path)]
    report = FetchReport(cache=str(cache.root), urls=len(ids_of), cached=len(ids_of) - len(todo))
    if not todo:
        return report
    offline = offline_reason()
    if offline:
        report.offline = offline
        report.failed = {pid: "offline" for u in todo for pid in ids_of[u]}
        log.warning("%s", report.summary())
        return report
    import httpx

    opts = _Options(timeout, retries, backoff, max_bytes, max_pixels)
    results: dict[str, dict[str, Any]] = {}
    recorded: set[str] = set()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=True, max_redirects=5, limits=limits,
                      headers={"User-Agent": USER_AGENT}, transport=transport) as client, \
            ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="prodrec-fetch") as pool, \
            tqdm(total=len(todo), desc="fetch images", unit="img", disable=not progress) as bar:
        try:
            for batch in _batches(todo, 512):  # the index is written after each batch: an interrupted run resumes
                futures = {pool.submit(_fetch_one, client, cache, url, opts): url for url in batch}
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update(1)
                cache.record({u: results[u] for u in batch})
                recorded.update(batch)
        finally:  # interrupted: keep what was fetched
            cache.record({u: r for u, r in results.items() if u not in recorded})
    for url in todo:
        rec = results[url]
        if "error" in rec:
            report.failed.update({pid: str(rec["error"]) for pid in ids_of[url]})
        else:
            report.fetched += 1
    if report.failed and report.fetched == 0 and all(results[u].get("network") for u in todo):
        report.offline = f"no network: none of the {len({httpx.URL(u).host for u in todo})} image host(s) answered"
        log.warning("%s", report.summary())
    return report
