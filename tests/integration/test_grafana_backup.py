"""``otel-trading grafana-backup`` / ``grafana-restore`` against a test double of Grafana's HTTP API.

There is no Grafana here: ``FakeGrafana`` is a stdlib ``http.server`` on a free loopback port that
implements the few endpoints the commands use (search, get by uid, save, folders), records every
request, and answers 401 unless the ``Authorization`` header is the expected bearer token.
"""

from __future__ import annotations

import argparse
import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from otel_trading.tooling import dashboard, grafana_backup
from otel_trading.tooling.grafana_backup import GrafanaClient, GrafanaError

from ..realprocs import free_port

TOKEN = "glsa_test_token_123"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeGrafana:
    """State of the test double: dashboards by uid, folders by uid, and every request received."""

    token: str = TOKEN
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    folders: dict[str, str] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""

    def add(self, uid: str, title: str, folder_uid: str = "", folder_title: str = "") -> None:
        self.dashboards[uid] = {
            "dashboard": {"id": len(self.dashboards) + 1, "uid": uid, "title": title, "panels": [], "version": 3},
            "meta": {"folderUid": folder_uid, "folderTitle": folder_title, "slug": title.lower()},
        }
        if folder_uid:
            self.folders[folder_uid] = folder_title

    def saved_bodies(self) -> list[Any]:
        return [r.body for r in self.requests if r.method == "POST" and r.path == "/api/dashboards/db"]


def _handler(state: FakeGrafana) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, payload: Any) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _handle(self, method: str) -> None:
            parsed = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            state.requests.append(
                Recorded(method, parsed.path, urllib.parse.parse_qs(parsed.query), dict(self.headers), body)
            )
            if self.headers.get("Authorization") != f"Bearer {state.token}":
                self._reply(401, {"message": "invalid API key", "traceID": "abc"})
                return
            self._route(method, parsed.path, urllib.parse.parse_qs(parsed.query), body)

        def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> None:
            if method == "GET" and path == "/api/search":
                assert query.get("type") == ["dash-db"], query
                limit = int(query.get("limit", ["1000"])[0])
                page = int(query.get("page", ["1"])[0])
                hits = [
                    {"uid": uid, "title": d["dashboard"]["title"], "type": "dash-db"}
                    for uid, d in sorted(state.dashboards.items())
                ]
                self._reply(200, hits[(page - 1) * limit : page * limit])
            elif method == "GET" and path.startswith("/api/dashboards/uid/"):
                uid = urllib.parse.unquote(path.rsplit("/", 1)[1])
                if uid in state.dashboards:
                    self._reply(200, state.dashboards[uid])
                else:
                    self._reply(404, {"message": "Dashboard not found"})
            elif method == "POST" and path == "/api/dashboards/db":
                folder_uid = body.get("folderUid", "")
                if folder_uid and folder_uid not in state.folders:
                    self._reply(400, {"message": "folder not found"})
                    return
                uid = body["dashboard"]["uid"]
                state.dashboards[uid] = {
                    "dashboard": body["dashboard"],
                    "meta": {"folderUid": folder_uid, "folderTitle": state.folders.get(folder_uid, "")},
                }
                self._reply(200, {"id": 99, "uid": uid, "status": "success", "version": 4})
            elif method == "GET" and path.startswith("/api/folders/"):
                uid = path.rsplit("/", 1)[1]
                if uid in state.folders:
                    self._reply(200, {"uid": uid, "title": state.folders[uid]})
                else:
                    self._reply(404, {"message": "folder not found"})
            elif method == "POST" and path == "/api/folders":
                state.folders[body["uid"]] = body["title"]
                self._reply(200, {"uid": body["uid"], "title": body["title"]})
            else:
                self._reply(404, {"message": f"no route {method} {path}"})

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    state = FakeGrafana()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _client(grafana: FakeGrafana, token: str = TOKEN) -> GrafanaClient:
    return GrafanaClient(base_url=grafana.url, token=token, timeout=5)


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="otel-trading")
    grafana_backup.add_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


# --- backup --------------------------------------------------------------------------------------


def test_backup_sends_the_bearer_token_on_every_request(grafana: FakeGrafana, tmp_path: Path) -> None:
    grafana.add("a", "Alpha")
    grafana.add("b", "Beta")
    grafana_backup.backup_dashboards(_client(grafana), tmp_path)
    assert len(grafana.requests) == 3
    assert {r.headers.get("Authorization") for r in grafana.requests} == {f"Bearer {TOKEN}"}


def test_backup_writes_one_file_per_dashboard_with_its_folder(grafana: FakeGrafana, tmp_path: Path) -> None:
    grafana.add("a", "Alpha", folder_uid="trading", folder_title="Trading")
    grafana.add("b", "Beta")
    files = grafana_backup.backup_dashboards(_client(grafana), tmp_path / "out")
    assert sorted(p.name for p in files) == ["a.json", "b.json"]
    record = json.loads((tmp_path / "out" / "a.json").read_text())
    assert record == {
        "dashboard": grafana.dashboards["a"]["dashboard"],
        "folderUid": "trading",
        "folderTitle": "Trading",
    }


def test_backup_lists_only_dashboards_through_the_search_api(grafana: FakeGrafana, tmp_path: Path) -> None:
    grafana.add("a", "Alpha")
    grafana_backup.backup_dashboards(_client(grafana), tmp_path)
    searches = [r for r in grafana.requests if r.path == "/api/search"]
    assert [s.query["type"] for s in searches] == [["dash-db"]]
    assert [r.path for r in grafana.requests if r.path != "/api/search"] == ["/api/dashboards/uid/a"]


def test_backup_follows_search_pages_until_a_short_page(grafana: FakeGrafana, tmp_path: Path) -> None:
    for i in range(5):
        grafana.add(f"d{i}", f"Dash {i}")
    files = grafana_backup.backup_dashboards(_client(grafana), tmp_path, page_size=2)
    assert len(files) == 5
    pages = [r.query["page"] for r in grafana.requests if r.path == "/api/search"]
    assert pages == [["1"], ["2"], ["3"]]


def test_backup_cli_uses_token_and_url_from_the_environment(
    grafana: FakeGrafana, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grafana.add("a", "Alpha")
    monkeypatch.setenv(grafana_backup.GRAFANA_TOKEN, TOKEN)
    monkeypatch.setenv(grafana_backup.GRAFANA_URL, grafana.url)
    assert _cli("grafana-backup", "--out", str(tmp_path)) == 0
    assert (tmp_path / "a.json").is_file()


def test_backup_cli_reads_the_token_from_token_file(
    grafana: FakeGrafana, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grafana.add("a", "Alpha")
    monkeypatch.delenv(grafana_backup.GRAFANA_TOKEN, raising=False)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert (
        _cli("grafana-backup", "--out", str(tmp_path / "out"), "--url", grafana.url, "--token-file", str(token_file))
        == 0
    )
    assert {r.headers.get("Authorization") for r in grafana.requests} == {f"Bearer {TOKEN}"}


def test_backup_cli_without_a_token_fails_before_any_request(
    grafana: FakeGrafana, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(grafana_backup.GRAFANA_TOKEN, raising=False)
    assert _cli("grafana-backup", "--out", str(tmp_path), "--url", grafana.url) == 1
    assert grafana.requests == []
    assert grafana_backup.GRAFANA_TOKEN in capsys.readouterr().err


def test_backup_with_a_wrong_token_reports_401_and_the_response_body(grafana: FakeGrafana, tmp_path: Path) -> None:
    with pytest.raises(GrafanaError) as excinfo:
        grafana_backup.backup_dashboards(_client(grafana, token="wrong"), tmp_path)
    assert excinfo.value.status == 401
    assert "HTTP 401" in str(excinfo.value)
    assert "invalid API key" in str(excinfo.value)


def test_backup_cli_exits_1_with_the_http_status_on_401(
    grafana: FakeGrafana, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(grafana_backup.GRAFANA_TOKEN, "wrong")
    assert _cli("grafana-backup", "--out", str(tmp_path / "out"), "--url", grafana.url) == 1
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "invalid API key" in err
    assert not (tmp_path / "out").exists()


def test_credentials_in_the_url_are_refused_without_a_request(grafana: FakeGrafana) -> None:
    with_credentials = grafana.url.replace("http://", "http://admin:admin@")
    with pytest.raises(GrafanaError, match="credentials in the Grafana URL"):
        GrafanaClient(base_url=with_credentials, token=TOKEN)
    assert grafana.requests == []


def test_unreachable_grafana_is_a_clear_error() -> None:
    client = GrafanaClient(base_url=f"http://127.0.0.1:{free_port()}", token=TOKEN, timeout=2)
    with pytest.raises(GrafanaError, match=r"GET http://127\.0\.0\.1:\d+/api/search\?.* failed"):
        client.search_dashboards()


def test_backup_cli_against_a_closed_port_says_what_to_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Old design: "... failed: [Errno 111] Connection refused".
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv(grafana_backup.GRAFANA_TOKEN, TOKEN)
    assert _cli("grafana-backup", "--out", str(tmp_path / "out"), "--url", url) == 1
    err = capsys.readouterr().err
    assert "Errno" not in err
    assert f"connection refused (nothing listens there): check that Grafana runs at {url}" in err


def test_token_is_not_shown_in_the_client_repr() -> None:
    assert TOKEN not in repr(GrafanaClient(base_url="http://localhost:3000", token=TOKEN))


# --- restore -------------------------------------------------------------------------------------


def _backup_file(tmp_path: Path, folder_uid: str = "", folder_title: str = "") -> Path:
    path = tmp_path / "a.json"
    record = {
        "dashboard": {"id": 17, "uid": "a", "title": "Alpha", "panels": [{"id": 1}], "version": 3},
        "folderUid": folder_uid,
        "folderTitle": folder_title,
    }
    path.write_text(json.dumps(record))
    return path


def test_restore_posts_the_dashboard_with_overwrite_and_no_id(grafana: FakeGrafana, tmp_path: Path) -> None:
    grafana_backup.restore_dashboard(_client(grafana), _backup_file(tmp_path))
    (body,) = grafana.saved_bodies()
    assert body["overwrite"] is True
    assert body["dashboard"] == {"id": None, "uid": "a", "title": "Alpha", "panels": [{"id": 1}], "version": 3}
    assert "folderUid" not in body


def test_restore_sends_json_with_the_bearer_token(grafana: FakeGrafana, tmp_path: Path) -> None:
    grafana_backup.restore_dashboard(_client(grafana), _backup_file(tmp_path))
    (post,) = [r for r in grafana.requests if r.method == "POST"]
    assert post.headers["Authorization"] == f"Bearer {TOKEN}"
    assert post.headers["Content-Type"] == "application/json"


def test_restore_into_an_existing_folder_keeps_the_folder(grafana: FakeGrafana, tmp_path: Path) -> None:
    grafana.folders["trading"] = "Trading"
    grafana_backup.restore_dashboard(_client(grafana), _backup_file(tmp_path, "trading", "Trading"))
    (body,) = grafana.saved_bodies()
    assert body["folderUid"] == "trading"
    assert not [r for r in grafana.requests if r.method == "POST" and r.path == "/api/folders"]


def test_restore_creates_a_missing_folder_first(grafana: FakeGrafana, tmp_path: Path) -> None:
    grafana_backup.restore_dashboard(_client(grafana), _backup_file(tmp_path, "trading", "Trading"))
    assert grafana.folders == {"trading": "Trading"}
    assert grafana.dashboards["a"]["meta"]["folderUid"] == "trading"


def test_restore_accepts_the_generated_dashboard_json(grafana: FakeGrafana, tmp_path: Path) -> None:
    path = dashboard.write_dashboard(tmp_path / "trading_system.json")
    grafana_backup.restore_dashboard(_client(grafana), path)
    (body,) = grafana.saved_bodies()
    assert body["dashboard"]["uid"] == dashboard.DASHBOARD_UID
    assert body["dashboard"]["panels"] == dashboard.build_dashboard()["panels"]


def test_backup_then_restore_round_trips_into_an_empty_grafana(grafana: FakeGrafana, tmp_path: Path) -> None:
    grafana.add("a", "Alpha", folder_uid="trading", folder_title="Trading")
    grafana.add("b", "Beta")
    original = {uid: dict(d["dashboard"]) for uid, d in grafana.dashboards.items()}
    files = grafana_backup.backup_dashboards(_client(grafana), tmp_path)
    grafana.dashboards.clear()
    grafana.folders.clear()
    for path in files:
        grafana_backup.restore_dashboard(_client(grafana), path)
    restored = {uid: {**d["dashboard"], "id": original[uid]["id"]} for uid, d in grafana.dashboards.items()}
    assert restored == original
    assert grafana.folders == {"trading": "Trading"}


def test_restore_cli_restores_every_file_and_exits_0(
    grafana: FakeGrafana, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(grafana_backup.GRAFANA_TOKEN, TOKEN)
    first = _backup_file(tmp_path)
    second = tmp_path / "b.json"
    second.write_text(json.dumps({"uid": "b", "title": "Beta", "panels": []}))
    assert _cli("grafana-restore", str(first), str(second), "--url", grafana.url) == 0
    assert [b["dashboard"]["uid"] for b in grafana.saved_bodies()] == ["a", "b"]


def test_restore_cli_exits_1_and_reports_401(
    grafana: FakeGrafana, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(grafana_backup.GRAFANA_TOKEN, "wrong")
    assert _cli("grafana-restore", str(_backup_file(tmp_path)), "--url", grafana.url) == 1
    assert "HTTP 401" in capsys.readouterr().err
    assert "a" not in grafana.dashboards


def test_restore_rejects_a_file_that_is_not_a_dashboard(grafana: FakeGrafana, tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"hello": "world"}))
    with pytest.raises(GrafanaError, match="neither a grafana-backup file nor a dashboard JSON"):
        grafana_backup.restore_dashboard(_client(grafana), path)
    assert grafana.requests == []


def test_environment_variable_names_are_module_constants() -> None:
    assert (grafana_backup.GRAFANA_TOKEN, grafana_backup.GRAFANA_URL) == ("GRAFANA_TOKEN", "GRAFANA_URL")
    assert grafana_backup.DEFAULT_GRAFANA_URL == "http://localhost:3000"
