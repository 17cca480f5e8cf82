"""The HTTP server behind /metrics: plain HTTP, TLS, mutual TLS and basic auth, with clear errors."""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import hmac
import ipaddress
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from otel_trading.settings import check_bool

__all__ = ["check_basic_auth", "is_loopback", "serve", "tls_options"]


def _check_file(arg: str, value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{arg} must be a path (str or os.PathLike), got {type(value).__name__}")
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"{arg}: no such file {str(path)!r}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{arg}: file {str(path)!r} is not readable by this process")
    return str(path)


def tls_options(certfile: Any, keyfile: Any, client_cafile: Any, client_auth_required: Any) -> dict[str, Any]:
    """Validated keyword arguments for prometheus_client's TLS server ({} for plain HTTP)."""
    check_bool("client_auth_required", client_auth_required)
    if (certfile is None) != (keyfile is None):
        given = "certfile" if certfile is not None else "keyfile"
        # prometheus_client would silently serve plain HTTP with only one of them.
        raise ValueError(f"certfile and keyfile must be given together to serve HTTPS; got only {given}")
    if certfile is None:
        if client_cafile is not None or client_auth_required:
            raise ValueError("client_cafile/client_auth_required need certfile and keyfile (mutual TLS)")
        return {}
    options: dict[str, Any] = {
        "certfile": _check_file("certfile", certfile),
        "keyfile": _check_file("keyfile", keyfile),
    }
    if client_auth_required and client_cafile is None:
        raise ValueError("client_auth_required=True needs client_cafile: the CA that signs scrapers' certs")
    if client_cafile is not None:
        options["client_cafile"] = _check_file("client_cafile", client_cafile)
    if client_auth_required:
        options["client_auth_required"] = True
    return options


def check_basic_auth(value: Any) -> tuple[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError("basic_auth must be a (username, password) pair")
    username, password = value
    if not isinstance(username, str) or not isinstance(password, str):
        raise TypeError("basic_auth username and password must be str")
    if not username or ":" in username:
        raise ValueError("basic_auth username must be non-empty and contain no ':'")
    if not password:
        raise ValueError("basic_auth password must be non-empty")
    return username, password


class _BasicAuth:
    """WSGI middleware: answers 401 unless the request carries the configured basic credentials.

    Only a SHA-256 of ``user:password`` is kept; comparison is constant-time.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], username: str, password: str) -> None:
        self._app = app
        self._expected = hashlib.sha256(f"{username}:{password}".encode()).digest()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self._authorized(environ.get("HTTP_AUTHORIZATION", "")):
            return self._app(environ, start_response)
        start_response(
            "401 Unauthorized",
            [
                ("WWW-Authenticate", 'Basic realm="otel-trading metrics", charset="UTF-8"'),
                ("Content-Type", "text/plain; charset=utf-8"),
            ],
        )
        return [b"401 Unauthorized: this /metrics endpoint requires HTTP basic auth\n"]

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            raw = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(hashlib.sha256(raw).digest(), self._expected)


def _ssl_context(options: dict[str, Any]) -> ssl.SSLContext:
    """The context prometheus_client would build for the same options."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if "client_cafile" in options:
        ctx.load_verify_locations(cafile=options["client_cafile"])
    if options.get("client_auth_required"):
        ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(certfile=options["certfile"], keyfile=options["keyfile"])
    return ctx


def _start_auth_server(
    registry: CollectorRegistry, port: int, addr: str, tls: dict[str, Any], auth: tuple[str, str]
) -> tuple[Any, Any]:
    """prometheus_client's server, with the basic-auth middleware in front of its WSGI app.

    prometheus_client has no server-side auth and builds its app internally, so the server is put
    together here from its public pieces; the middleware is in place before the first request.
    """
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    infos = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]

    class Server(ThreadingWSGIServer):
        address_family = family

    app = _BasicAuth(make_wsgi_app(registry), *auth)
    httpd = make_server(str(sockaddr[0]), port, app, Server, handler_class=QuietHandler)
    if tls:
        try:
            httpd.socket = _ssl_context(tls).wrap_socket(httpd.socket, server_side=True)
        except BaseException:
            httpd.server_close()
            raise
    thread = threading.Thread(target=httpd.serve_forever, name="otel-trading-metrics", daemon=True)
    thread.start()
    return httpd, thread


def is_loopback(addr: str) -> bool:
    if addr == "localhost":
        return True
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def serve(
    registry: CollectorRegistry, port: int, addr: str, auth: tuple[str, str] | None = None, **tls: Any
) -> tuple[Any, Any, int]:
    from prometheus_client import start_http_server

    try:
        if auth is None:
            server, thread = start_http_server(port, addr=addr, registry=registry, **tls)
        else:
            server, thread = _start_auth_server(registry, port, addr, tls, auth)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise OSError(exc.errno, f"metrics server: port {port} on {addr} is already in use") from exc
        raise OSError(exc.errno, f"metrics server: cannot listen on {addr}:{port}: {exc.strerror or exc}") from exc
    return server, thread, int(server.server_port)
