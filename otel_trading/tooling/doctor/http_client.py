"""The doctor's HTTP client: GETs with short timeouts, no proxy, basic auth from the URL, never raising."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

__all__ = ["Response", "http_get", "redact"]

_MAX_BODY = 64 * 1024 * 1024


@dataclass(frozen=True)
class Response:
    """``status`` is None when no HTTP response came back; ``error`` then says why."""

    status: int | None
    body: bytes = b""
    error: str = ""
    elapsed_ms: float = 0.0

    def json(self) -> Any:
        return json.loads(self.body)


def redact(url: str) -> str:
    """``url`` without user:password, for printing."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def http_get(url: str, timeout: float, cafile: str | None = None) -> Response:
    """GET ``url``; credentials in the URL become a basic Authorization header. Never raises."""
    parts = urllib.parse.urlsplit(url)
    headers = {"User-Agent": "otel-trading-doctor", "Accept": "text/plain, application/json"}
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        url = redact(url)
    # No proxy: the doctor talks to the bot and its monitoring directly.
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if parts.scheme == "https":
        handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=cafile)))
    opener = urllib.request.build_opener(*handlers)
    start = time.perf_counter()
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
            body = resp.read(_MAX_BODY)
            return Response(resp.status, body, elapsed_ms=(time.perf_counter() - start) * 1000)
    except urllib.error.HTTPError as exc:
        return Response(exc.code, exc.read(_MAX_BODY), f"HTTP {exc.code} {exc.reason}")
    except urllib.error.URLError as exc:
        return Response(None, error=_reason(exc.reason))
    except TimeoutError:
        return Response(None, error=f"timed out after {timeout:g}s")
    except (OSError, ValueError) as exc:
        # http.client errors (e.g. a TLS endpoint answering a plain request) land here.
        return Response(None, error=_reason(exc))


def _reason(reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (nothing listens on that port)"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve host ({reason.strerror})"
    if isinstance(reason, ssl.SSLError):
        return f"TLS error: {reason.reason or reason}"
    return str(reason) or type(reason).__name__
