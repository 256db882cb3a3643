"""``trainmedic serve``: the report on localhost, refreshed while the run trains.

A standard-library HTTP server in a thread (no dependency). Every request opens each run's SQLite file
read-only (``mode=ro``; in WAL mode a reader never blocks the writer, and a read-only connection never
checkpoints or writes), reads what is committed so far and closes it again, so nothing is held between
requests. Two addresses:

- ``/``: the whole report (static figures, interactive charts, the diagnosis of what was recorded so far),
  with a live banner; reloading the page shows every new step;
- ``/api/live``: a small JSON document (a version, each run's step and status, the live findings, the
  interactive charts' data) that the page polls every few seconds to redraw its charts in place and list
  the live findings as they fire. Recomputed only when a run's files changed (their size and mtime).

It binds 127.0.0.1 by default and answers only requests addressed to that host (a page elsewhere cannot
reach it through DNS rebinding); nothing but those two addresses is served.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..errors import RunDirError, TrainmedicError
from ..store import schema
from ..store.reader import RunReader
from .html import esc
from .interactive import encode

LIVE_URL = "/api/live"


def _version(run_dirs: Sequence[Path]) -> str:
    """Changes whenever a writer commits: the size and mtime of each database and its WAL."""
    parts = []
    for d in run_dirs:
        for name in (schema.DB_NAME, schema.DB_NAME + "-wal"):
            try:
                st = os.stat(d / name)
                parts.append(f"{st.st_size}:{st.st_mtime_ns}")
            except OSError:
                parts.append("-")
    return "|".join(parts)


class LiveReport:
    """Builds the page and the live JSON of some run directories, reading them read-only on every call."""

    def __init__(
        self,
        run_dirs: Sequence[str | os.PathLike[str]],
        *,
        title: str | None = None,
        interval_s: float = 2.0,
        diagnose: bool = True,
        page_every_s: float = 5.0,
    ) -> None:
        """``page_every_s``: the whole page (diagnosis included) is rebuilt at most this often."""
        if not run_dirs:
            raise TrainmedicError("`run_dirs` must name at least one run directory; got none")
        self.run_dirs = [Path(d) for d in run_dirs]
        for d in self.run_dirs:
            RunReader(d, read_only=True).close()  # a wrong path is an error now, not a blank page later
        self.title = title
        self.interval_ms = max(250, int(interval_s * 1000))
        self.diagnose = diagnose
        self._lock = threading.Lock()
        self._live: tuple[str, bytes] | None = None
        self._page: tuple[str, bytes] | None = None
        self._page_time = 0.0
        self.page_every_s = page_every_s

    def _open(self) -> list[RunReader]:
        readers: list[RunReader] = []
        try:
            for d in self.run_dirs:
                readers.append(RunReader(d, read_only=True))
        except BaseException:
            for r in readers:
                r.close()
            raise
        return readers

    def page(self) -> bytes:
        """The whole report as it stands, with the live banner and polling."""
        from .build import render_page, run_data

        version = _version(self.run_dirs)
        with self._lock:
            if self._page is not None and (
                self._page[0] == version or time.monotonic() - self._page_time < self.page_every_s
            ):
                return self._page[1]  # the page polls fresh data at once; its frame may be a few s old
        readers = self._open()
        try:
            runs = run_data(readers, [None] * len(readers), diagnose=self.diagnose)
            html = render_page(
                runs, None, self.title, live={"url": LIVE_URL, "interval_ms": self.interval_ms}
            )
        finally:
            for r in readers:
                r.close()
        body = html.encode("utf-8")
        with self._lock:
            self._page = (version, body)
            self._page_time = time.monotonic()
        return body

    def live(self) -> bytes:
        """``{"version", "runs": [{label, steps, status}], "findings": [...], "charts": {...}}`` as JSON."""
        from .build import all_specs, run_data

        version = _version(self.run_dirs)
        with self._lock:
            if self._live is not None and self._live[0] == version:
                return self._live[1]
        readers = self._open()
        try:
            runs = run_data(readers, [None] * len(readers), diagnose=False)  # the live alerts: cheap
            info = []
            findings = []
            for rd in runs:
                r = rd.reader
                loss = r.scalar("loss")
                last = int(loss.steps[-1]) + 1 if len(loss) else 0
                steps = max(int(r.meta.get("steps") or 0), last)
                info.append({"label": rd.label, "steps": steps, "status": str(r.meta.get("status", "?"))})
                for f in rd.live:
                    findings.append(
                        {
                            "run": rd.label,
                            "code": f.code,
                            "severity": f.severity.value,
                            "title": f.title or f.message,
                            "step": f.step,
                        }
                    )
            doc = {"version": version, "runs": info, "findings": findings, "charts": all_specs(runs)}
        finally:
            for r in readers:
                r.close()
        body = encode(doc).encode("utf-8")  # NaN-free, and safe even if a browser sniffed it as HTML
        with self._lock:
            self._live = (version, body)
        return body


def _handler(live: LiveReport, allowed_hosts: set[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "trainmedic"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:  # quiet: a poll every 2 s is not news
            return

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 -- the name http.server calls
            host = (self.headers.get("Host") or "").lower()
            if host not in allowed_hosts:
                self._send(403, b"forbidden: unexpected Host header\n", "text/plain; charset=utf-8")
                return
            path = urlparse(self.path).path
            try:
                if path == "/":
                    self._send(200, live.page(), "text/html; charset=utf-8")
                elif path == LIVE_URL:
                    self._send(200, live.live(), "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain; charset=utf-8")
            except (RunDirError, TrainmedicError) as e:
                self._send(503, f"<!DOCTYPE html><p>{esc(e)}</p>".encode(), "text/html; charset=utf-8")
            except Exception as e:  # the viewer must keep serving; the run is never touched
                msg = (
                    f"<!DOCTYPE html><p>the report could not be built ({esc(type(e).__name__)}: {esc(e)})</p>"
                )
                self._send(500, msg.encode(), "text/html; charset=utf-8")

    return Handler


class LiveServer:
    """A :class:`LiveReport` served over HTTP from a background thread; ``url`` says where."""

    def __init__(self, live: LiveReport, host: str = "127.0.0.1", port: int = 8000) -> None:
        self.live = live
        self.httpd = ThreadingHTTPServer((host, port), _handler(live, set()))
        self.httpd.daemon_threads = True
        bound_host, bound_port = self.httpd.server_address[:2]
        names = (
            {str(bound_host), "localhost", "127.0.0.1", "[::1]"}
            if host in ("127.0.0.1", "localhost")
            else {host}
        )
        allowed = {f"{n}:{bound_port}" for n in names} | {str(n) for n in names}
        self.httpd.RequestHandlerClass = _handler(live, {a.lower() for a in allowed})
        self.host, self.port = str(bound_host), int(bound_port)
        self.url = f"http://{'127.0.0.1' if self.host == '0.0.0.0' else self.host}:{self.port}/"
        self._thread: threading.Thread | None = None

    def start(self) -> LiveServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="trainmedic-serve", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    run_dirs: Sequence[str | os.PathLike[str]],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    interval_s: float = 2.0,
    title: str | None = None,
    diagnose: bool = True,
) -> LiveServer:
    """Start serving the live report of ``run_dirs`` (one, or several side by side); returns the server."""
    return LiveServer(
        LiveReport(run_dirs, title=title, interval_s=interval_s, diagnose=diagnose), host, port
    ).start()
