"""Image URLs (issue 18, item 2): photos fetched from a server this test starts on 127.0.0.1 into the
content-addressed cache; every failure named by id with its reason; resumable; offline in one line.

No test reaches any other address or host name (not even one that cannot resolve): every URL is
http://127.0.0.1:<port>/..., a closed port stands for an unreachable host, and a lookup failure is played
by an httpx mock transport.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from shop_export import FLAGS, pid, picture, write_export

from prodrec.core.errors import ConfigError
from prodrec.data.catalog import load_catalog
from prodrec.data.fetch import ImageCache, fetch_images
from prodrec.data.images import load_rgb
from prodrec.run import cli

SLOW_S = 2.0  # the slow endpoint answers after this long; clients time out after TIMEOUT
TIMEOUT = 0.4
CAP = 64 * 1024


def _png(colour: str = "Blue", mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    picture(colour, mode).save(buf, format="PNG")
    return buf.getvalue()


def _noise_jpeg(size: int = 400) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


class Handler(BaseHTTPRequestHandler):
    hits: Counter[str] = Counter()

    def log_message(self, *args: object) -> None:  # keep pytest's output clean
        pass

    def _send(self, status: int, body: bytes, kind: str = "image/png", length: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading (size cap, timeout)
            pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path
        Handler.hits[path] += 1
        if path.startswith("/good/"):
            colour = path.rsplit("/", 1)[1].split(".")[0]
            self._send(200, _png(colour))
        elif path == "/gray.png":
            self._send(200, _png("Red", "L"))
        elif path == "/missing.jpg":
            self._send(404, b"not here", "text/plain")
        elif path == "/slow.jpg":
            time.sleep(SLOW_S)
            self._send(200, _png())
        elif path == "/page.jpg":
            self._send(200, b"<html><body>Sorry, this product is gone</body></html>", "text/html; charset=utf-8")
        elif path == "/moved.jpg":
            self.send_response(302)
            self.send_header("Location", "/good/Green.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/huge.jpg":  # declares its size: refused before reading
            self._send(200, _noise_jpeg(), "image/jpeg")
        elif path == "/huge-stream.jpg":  # no declared size: refused while reading
            self._send(200, _noise_jpeg(), "image/jpeg", length=False)
        elif path == "/flaky.png":  # busy once, then fine
            if Handler.hits[path] == 1:
                self.send_response(503)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._send(200, _png("Black"))
        elif path == "/down.png":
            self._send(500, b"oops", "text/plain")
        elif path == "/truncated.jpg":
            self._send(200, _noise_jpeg(64)[:300], "image/jpeg")
        else:
            self._send(404, b"", "text/plain")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """http://127.0.0.1:<port> of a server in a thread; proxies from the environment are cleared so that
    nothing leaves this machine, and fetching is switched on (conftest sets PRODREC_OFFLINE=1)."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("PRODREC_OFFLINE", "0")
    Handler.hits = Counter()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


OPTS = dict(timeout=TIMEOUT, retries=1, backoff=0.01, max_bytes=CAP, concurrency=4, progress=False)


def test_fetch_every_outcome_named_by_id(server: str, tmp_path: Path) -> None:
    urls = {
        "good-1": f"{server}/good/Blue.png", "good-2": f"{server}/good/Red.png",
        "same-as-1": f"{server}/good/Blue.png",  # one URL, two products: fetched once
        "gray": f"{server}/gray.png", "moved": f"{server}/moved.jpg", "flaky": f"{server}/flaky.png",
        "gone": f"{server}/missing.jpg", "slow": f"{server}/slow.jpg", "page": f"{server}/page.jpg",
        "huge": f"{server}/huge.jpg", "stream": f"{server}/huge-stream.jpg", "down": f"{server}/down.png",
        "cut": f"{server}/truncated.jpg", "nowhere": f"http://127.0.0.1:{closed_port()}/a.png",
    }
    cache = ImageCache(tmp_path / "images")
    report = fetch_images(urls, cache, **OPTS)
    assert report.urls == 13 and report.cached == 0 and report.fetched == 5 and report.offline is None
    failed = report.failed
    assert set(failed) == {"gone", "slow", "page", "huge", "stream", "down", "cut", "nowhere"}
    assert failed["gone"] == "HTTP 404 Not Found"
    assert failed["slow"] == "timed out after 0.4 s waiting for data (after 2 tries)"
    assert failed["page"].startswith("not a usable image (text/html") and "identify" in failed["page"]
    assert "exceeds the cap of 66 kB" in failed["huge"] and failed["huge"].startswith("body of")
    assert "stopped reading" in failed["stream"]
    assert failed["down"] == "HTTP 500 Internal Server Error (after 2 tries)"
    assert "cannot decode" in failed["cut"]
    assert failed["nowhere"].startswith("cannot connect") and "(after 2 tries)" in failed["nowhere"]
    assert Handler.hits["/flaky.png"] == 2 and Handler.hits["/good/Blue.png"] == 1  # retried once; fetched once
    # content-addressed: the redirect's target and the good Green image are one file, named by its hash
    found = cache.resolve([urls["good-1"], urls["moved"], urls["gone"]])
    assert isinstance(found[urls["good-1"]], Path) and found[urls["good-1"]].suffix == ".png"
    assert found[urls["gone"]] == "HTTP 404 Not Found"
    assert load_rgb(str(found[urls["moved"]]), size=8)[4, 0].tolist() == [40, 160, 60]  # green border
    assert len(list((tmp_path / "images").glob("*.png"))) == 5
    text = "\n".join(report.lines())
    assert "5 fetched" in text and "8 failed" in text and "  gone: HTTP 404 Not Found" in text

    # a re-run fetches only what failed (the busy and the broken ones), nothing that is cached
    Handler.hits.clear()
    again = fetch_images(urls, cache, **OPTS)
    assert again.cached == 5 and again.fetched == 0 and set(again.failed) == set(failed)
    assert Handler.hits["/good/Blue.png"] == 0 and Handler.hits["/missing.jpg"] == 1


def test_offline_says_so_in_one_line(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("PRODREC_OFFLINE", "1")
    urls = {pid(i): f"{server}/good/Blue.png?{i}" for i in range(8)}
    caplog.set_level("WARNING")
    report = fetch_images(urls, tmp_path / "images", **OPTS)
    assert report.offline == "PRODREC_OFFLINE=1" and report.fetched == 0 and sum(Handler.hits.values()) == 0
    assert len(report.failed) == 8 and report.lines() == [report.summary()]
    assert report.summary() == (f"offline (PRODREC_OFFLINE=1): 8 image URL(s) not fetched: '{pid(0)}', '{pid(1)}', "
                                f"'{pid(2)}', '{pid(3)}', '{pid(4)}' and 3 more")
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [report.summary()]


def test_no_network_is_told_from_one_failing_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODREC_OFFLINE", "0")

    def no_dns(request: httpx.Request) -> httpx.Response:  # what a machine without network answers
        raise httpx.ConnectError("[Errno -3] Temporary failure in name resolution", request=request)

    urls = {"a": "http://127.0.0.1:9/a.jpg", "b": "http://127.0.0.1:10/b.jpg"}  # never dialled: mock transport
    report = fetch_images(urls, tmp_path / "images", **{**OPTS, "retries": 0},
                          transport=httpx.MockTransport(no_dns))
    assert report.offline == "no network: none of the 1 image host(s) answered"
    assert report.summary().startswith("offline (no network") and "'a', 'b'" in report.summary()


def test_arguments_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not an http"):
        fetch_images({"a": "photos/a.jpg"}, tmp_path)
    with pytest.raises(ConfigError, match="timeout > 0"):
        fetch_images({"a": "http://127.0.0.1:9/a.jpg"}, tmp_path, timeout=0)
    with pytest.raises(ConfigError, match="needs image_cache"):
        load_catalog(tmp_path, fetch=True)
    # an image pattern may be a URL too; without a cache nothing is fetched, and the report says so by id
    frame = pd.DataFrame({"sku": ["a", "b"], "title": ["x", "y"]})
    cat = load_catalog(frame, id_column="sku", image_pattern="http://127.0.0.1:9/img/{id}.jpg", require_images=False)
    assert cat.report.image_urls == 2 and cat.report.unfetched_url_examples == {"a": "not fetched yet",
                                                                              "b": "not fetched yet"}
    assert cat.image_paths == ["", ""] and cat.report.missing_images == 0


def test_catalog_points_at_cached_files(server: str, tmp_path: Path) -> None:
    """URLs are counted apart from missing files, named by id, and point at the cache once fetched."""
    urls = {7: f"{server}/good/Red.png", 8: f"{server}/missing.jpg", 9: f"{server}/gray.png"}
    write_export(tmp_path, urls=urls)
    cache = tmp_path / "store" / "images"
    before = load_catalog(tmp_path / "products.parquet", **FLAGS, image_cache=cache)
    r = before.report
    assert r.image_urls == 3 and r.unfetched_urls == 3 and r.missing_images == 0
    assert r.unfetched_url_examples == {pid(7): "not fetched yet", pid(8): "not fetched yet", pid(9): "not fetched yet"}
    assert f"image URLs not fetched          3  '{pid(7)}', '{pid(8)}', '{pid(9)}'" in str(r)
    # kept without a photo (for the arms it has), its photo's problem noted
    assert "prodrec fetch-images" in str(r) and pid(7) in before.ids and before.row(pid(7))["image_path"] == ""
    assert before.row(pid(7))["image_note"] == "image URL not fetched (not fetched yet)"
    assert "kept without a photo" in str(r) and pid(7) not in load_catalog(
        tmp_path / "products.parquet", **FLAGS, image_cache=cache, require_images=True).ids
    after = load_catalog(tmp_path / "products.parquet", **FLAGS, image_cache=cache, fetch=True,
                         fetch_options={"timeout": TIMEOUT, "retries": 0}, progress=False)
    assert after.report.fetch is not None and after.report.fetch.fetched == 2
    assert after.report.unfetched_url_examples == {pid(8): "HTTP 404 Not Found"}
    assert Path(after.row(pid(7))["image_path"]).parent == cache
    assert after.row(pid(7))["image"] == urls[7]  # the URL stays in its column
    assert pid(7) in after.ids and pid(9) in after.ids and after.row(pid(8))["image_note"].endswith("404 Not Found)")
    assert f"not fetched: {pid(8)}: HTTP 404 Not Found" in str(after.report)
    json.dumps(after.report.to_dict())  # the report (fetch included) is JSON-ready


def test_fetch_images_command(server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    urls = {7: f"{server}/good/Red.png", 8: f"{server}/missing.jpg"}
    write_export(tmp_path, urls=urls)
    flags = ["--data", str(tmp_path / "products.jsonl"), "--id-column", "product_id", "--image-column", "image",
             "--store", str(tmp_path / "store"), "--timeout", str(TIMEOUT), "--retries", "0", "--quiet"]
    assert cli.main(["fetch-images", *flags]) == 0
    out = capsys.readouterr().out
    assert "image URLs: 2; 1 fetched, 0 already cached, 1 failed" in out and f"{pid(8)}: HTTP 404 Not Found" in out
    assert cli.main(["fetch-images", *flags, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["fetch"]["cached"] == 1 and payload["fetch"]["failed"] == {pid(8): "HTTP 404 Not Found"}
    assert cli.main(["load-report", *flags[:-7], "--store", str(tmp_path / "store")]) == 0
    report = capsys.readouterr().out
    assert "image URLs not fetched          1" in report and "image files missing             0" in report
