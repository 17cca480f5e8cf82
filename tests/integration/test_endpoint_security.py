"""A safe /metrics endpoint: loopback by default, optional TLS (and mutual TLS) and basic auth.

Certificates are minted per test session with the ``openssl`` CLI into a temp dir and passwords
come from ``secrets``: no key or secret lives in the repository (a test checks that too). The
Prometheus scrape config the README shows is exercised against a real Prometheus.
"""

from __future__ import annotations

import base64
import secrets
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from otel_trading import CircuitBreaker, start_metrics_server
from otel_trading.exporting import DEFAULT_METRICS_ADDR, MetricsServer

from ..realprocs import REPO, missing, require_binary, start_prometheus, wait_until

USER = "prometheus"


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([require_binary("openssl"), *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _issue(name: str, extensions: str, cwd: Path) -> None:
    """A P-256 key and a one-day certificate for ``name``, signed by the CA in ``cwd``."""
    (cwd / f"{name}.ext").write_text(extensions)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=cwd)
    subject = f"/CN=otel-trading test {name}"
    _openssl(*f"req -new -key {name}.key -out {name}.csr".split(), "-subj", subject, cwd=cwd)
    _openssl(
        *f"x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -sha256".split(),
        *f"-extfile {name}.ext -out {name}.pem".split(),
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    # Explicit extensions: Python >= 3.13 verifies with VERIFY_X509_STRICT.
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=d)
    _openssl(
        *["req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "1", "-out", "ca.pem"],
        *("-subj", "/CN=otel-trading test CA"),
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        *("-addext", "subjectKeyIdentifier=hash"),
        cwd=d,
    )
    common = (
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    _issue("server", common + "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n", d)
    _issue("client", common + "extendedKeyUsage=clientAuth\n", d)
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key")


def get(
    url: str,
    cafile: Path | None = None,
    client: tuple[Path, Path] | None = None,
    auth: tuple[str, str] | None = None,
) -> tuple[int, bytes, dict[str, str]]:
    """GET without proxies; (status, body, headers). Connection-level failures raise."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if url.startswith("https:"):
        ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        if client:
            ctx.load_cert_chain(str(client[0]), str(client[1]))
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=5) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def _with_a_breaker() -> CircuitBreaker:
    breaker = CircuitBreaker("venue")
    breaker.call(lambda: None)
    return breaker


# --- bind address -------------------------------------------------------------------------------


def test_default_bind_address_is_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    # Checked on the listening socket itself: no traffic to this host's non-loopback addresses.
    monkeypatch.delenv("OTEL_EXPORTER_PROMETHEUS_HOST", raising=False)
    with start_metrics_server(port=0) as srv:
        assert srv.addr == DEFAULT_METRICS_ADDR == "127.0.0.1"
        assert srv._server.server_address[0] == "127.0.0.1"


# --- TLS ------------------------------------------------------------------------------------------


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[MetricsServer]:
    with start_metrics_server(port=0, addr="127.0.0.1", certfile=pki.server_cert, keyfile=pki.server_key) as srv:
        yield srv


def test_tls_serves_metrics_over_https_verified_by_the_ca(tls_server: MetricsServer, pki: Pki) -> None:
    breaker = _with_a_breaker()
    assert tls_server.url.startswith("https://")
    status, body, _ = get(tls_server.url, cafile=pki.ca)
    assert status == 200 and b'circuit_breaker_successes_total{name="venue"' in body
    del breaker


def test_tls_endpoint_does_not_answer_plain_http(tls_server: MetricsServer) -> None:
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        get(tls_server.url.replace("https://", "http://"))


def test_tls_endpoint_is_not_trusted_without_its_ca(tls_server: MetricsServer) -> None:
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        get(tls_server.url)


@pytest.fixture
def mtls_server(pki: Pki) -> Iterator[MetricsServer]:
    with start_metrics_server(
        port=0,
        addr="127.0.0.1",
        certfile=pki.server_cert,
        keyfile=pki.server_key,
        client_cafile=pki.ca,
        client_auth_required=True,
    ) as srv:
        yield srv


def test_mutual_tls_refuses_a_client_without_a_certificate(mtls_server: MetricsServer, pki: Pki) -> None:
    with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
        get(mtls_server.url, cafile=pki.ca)


def test_mutual_tls_serves_a_client_certificate_signed_by_the_ca(mtls_server: MetricsServer, pki: Pki) -> None:
    status, _, _ = get(mtls_server.url, cafile=pki.ca, client=(pki.client_cert, pki.client_key))
    assert status == 200


# --- basic auth -------------------------------------------------------------------------------------


@pytest.fixture
def password() -> str:
    return secrets.token_urlsafe(16)


@pytest.fixture
def auth_server(password: str) -> Iterator[MetricsServer]:
    with start_metrics_server(port=0, addr="127.0.0.1", basic_auth=(USER, password)) as srv:
        yield srv


def test_basic_auth_answers_401_with_a_challenge_without_credentials(auth_server: MetricsServer) -> None:
    status, body, headers = get(auth_server.url)
    assert status == 401
    assert headers.get("WWW-Authenticate", "").startswith("Basic ")
    assert b"circuit_breaker" not in body


def test_basic_auth_refuses_a_wrong_password(auth_server: MetricsServer, password: str) -> None:
    assert get(auth_server.url, auth=(USER, password + "x"))[0] == 401


def test_basic_auth_refuses_a_wrong_user(auth_server: MetricsServer, password: str) -> None:
    assert get(auth_server.url, auth=("admin", password))[0] == 401


def test_basic_auth_serves_metrics_with_the_configured_credentials(auth_server: MetricsServer, password: str) -> None:
    breaker = _with_a_breaker()
    status, body, _ = get(auth_server.url, auth=(USER, password))
    assert status == 200 and b"circuit_breaker_successes_total" in body
    del breaker


@pytest.fixture
def tls_auth_server(pki: Pki, password: str) -> Iterator[MetricsServer]:
    with start_metrics_server(
        port=0,
        addr="127.0.0.1",
        certfile=pki.server_cert,
        keyfile=pki.server_key,
        basic_auth=(USER, password),
    ) as srv:
        yield srv


def test_basic_auth_over_tls(tls_auth_server: MetricsServer, pki: Pki, password: str) -> None:
    assert get(tls_auth_server.url, cafile=pki.ca)[0] == 401
    assert get(tls_auth_server.url, cafile=pki.ca, auth=(USER, password))[0] == 200


def test_basic_auth_server_reports_a_port_in_use(password: str) -> None:
    with start_metrics_server(port=0, addr="127.0.0.1") as first:
        with pytest.raises(OSError, match=f"port {first.port} .*already in use"):
            start_metrics_server(port=first.port, addr="127.0.0.1", basic_auth=(USER, password))


# --- bad security options fail at start-up, naming the argument -------------------------------------


def test_certfile_without_keyfile_is_refused_instead_of_serving_plain_http(pki: Pki) -> None:
    with pytest.raises(ValueError, match="certfile and keyfile must be given together"):
        start_metrics_server(port=0, addr="127.0.0.1", certfile=pki.server_cert)


def test_a_missing_certificate_file_is_named(tmp_path: Path, pki: Pki) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ValueError, match=f"certfile: no such file '{missing}'"):
        start_metrics_server(port=0, addr="127.0.0.1", certfile=missing, keyfile=pki.server_key)


def test_client_auth_without_a_client_ca_is_refused(pki: Pki) -> None:
    with pytest.raises(ValueError, match="client_auth_required=True needs client_cafile"):
        start_metrics_server(
            port=0,
            addr="127.0.0.1",
            certfile=pki.server_cert,
            keyfile=pki.server_key,
            client_auth_required=True,
        )


@pytest.mark.parametrize(
    ("basic_auth", "exc", "needle"),
    [
        ("user:pass", TypeError, "basic_auth must be a (username, password) pair"),
        (("user",), TypeError, "basic_auth must be a (username, password) pair"),
        (("", "pw"), ValueError, "username must be non-empty and contain no ':'"),
        (("a:b", "pw"), ValueError, "username must be non-empty and contain no ':'"),
        (("user", ""), ValueError, "password must be non-empty"),
        (("user", 123), TypeError, "username and password must be str"),
    ],
)
def test_malformed_basic_auth_is_refused(basic_auth: object, exc: type[Exception], needle: str) -> None:
    with pytest.raises(exc) as info:
        start_metrics_server(port=0, addr="127.0.0.1", basic_auth=basic_auth)  # type: ignore[arg-type]
    assert needle in str(info.value)


# --- no secret in the repository ---------------------------------------------------------------------


def test_no_private_key_or_certificate_is_committed() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=False, timeout=60
    ).stdout.split(b"\0")
    if not any(tracked):
        missing("a git checkout")
    # Split so this file does not match its own needle.
    needle = b"PRIVATE" + b" KEY-----"
    offenders = []
    for rel in filter(None, tracked):
        path = REPO / rel.decode()
        if path.is_file() and needle in path.read_bytes():
            offenders.append(rel.decode())
    assert offenders == []


# --- the README's Prometheus scrape config, against a real Prometheus ------------------------------


@pytest.mark.integration
def test_prometheus_scrapes_a_tls_and_basic_auth_endpoint_with_the_documented_config(
    tmp_path: Path, pki: Pki, password: str, tls_auth_server: MetricsServer
) -> None:
    (tmp_path / "scrape-password").write_text(password)
    srv = tls_auth_server
    breaker = _with_a_breaker()
    config = f"""
global: {{scrape_interval: 1s}}
scrape_configs:
  - job_name: trading-bot
    scheme: https
    tls_config: {{ca_file: {pki.ca}}}
    basic_auth: {{username: {USER}, password_file: {tmp_path / "scrape-password"}}}
    static_configs: [{{targets: ['127.0.0.1:{srv.port}']}}]
  - job_name: no-credentials
    scheme: https
    tls_config: {{ca_file: {pki.ca}}}
    static_configs: [{{targets: ['127.0.0.1:{srv.port}']}}]
"""
    with start_prometheus(tmp_path / "prom", config) as prom:
        result = prom.wait_for_series('circuit_breaker_successes_total{job="trading-bot",name="venue"}')

        def denied() -> str:
            targets = prom.api("/api/v1/targets")["activeTargets"]
            return next(
                (t["lastError"] for t in targets if t["labels"]["job"] == "no-credentials" and t["lastError"]),
                "",
            )

        error = wait_until(denied, 60, what="the no-credentials job to fail")
    del breaker
    assert result[0]["value"][1] == "1"
    assert "401" in error
