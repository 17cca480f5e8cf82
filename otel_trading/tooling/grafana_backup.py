"""Back up and restore Grafana dashboards through Grafana's HTTP API (the guide's Maintenance section).

The guide's recipe (``curl http://admin:admin@localhost:3000/api/search?query=& | jq -r '.[] | .uri'
| xargs ... /api/dashboards/{}``) is not even valid shell (the unquoted ``&`` ends the command, so
bash reports a syntax error at the following ``|``); beyond that it relies on the default
admin:admin password, on the deprecated ``uri`` field and slug route (``/api/dashboards/db/<slug>``,
removed in Grafana 8), and concatenates every dashboard into one file that ``POST
/api/dashboards/db`` cannot take back. This module does it properly:

* ``otel-trading grafana-backup --out DIR`` lists dashboards with ``GET /api/search?type=dash-db``
  (paged), fetches each with ``GET /api/dashboards/uid/<uid>`` and writes ``DIR/<uid>.json`` holding
  ``{"dashboard": ..., "folderUid": ..., "folderTitle": ...}``.
* ``otel-trading grafana-restore FILE...`` posts each file to ``POST /api/dashboards/db`` with
  ``overwrite: true`` (recreating a missing folder first). A plain dashboard JSON, such as the
  generated ``deploy/grafana/dashboards/trading_system.json``, is accepted too.

Authentication is a bearer token only: a Grafana service-account token from ``$GRAFANA_TOKEN`` or
``--token-file`` (basic auth and credentials in the URL are refused). The server is ``$GRAFANA_URL``
(default ``http://localhost:3000``). Failures name the request, the HTTP status and the start of the
response body. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_GRAFANA_URL",
    "GRAFANA_TOKEN",
    "GRAFANA_URL",
    "GrafanaClient",
    "GrafanaError",
    "add_subcommand",
    "backup_dashboards",
    "restore_dashboard",
]

#: Environment variable holding a Grafana service-account token (sent as ``Authorization: Bearer``).
GRAFANA_TOKEN = "GRAFANA_TOKEN"
#: Environment variable holding Grafana's base URL.
GRAFANA_URL = "GRAFANA_URL"
DEFAULT_GRAFANA_URL = "http://localhost:3000"

#: Grafana's maximum page size for /api/search.
SEARCH_PAGE_SIZE = 5000
_BODY_EXCERPT = 300
_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


class GrafanaError(RuntimeError):
    """A Grafana request failed (HTTP error status, unreachable server or unusable response)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        #: The HTTP status Grafana answered with, if it answered.
        self.status = status


def _unreachable(reason: object, base_url: str) -> str:
    """Why no HTTP answer came back, in words (not ``[Errno 111] Connection refused``)."""
    where = f"check that Grafana runs at {base_url} (--url or ${GRAFANA_URL})"
    if isinstance(reason, ConnectionRefusedError):
        return f"connection refused (nothing listens there): {where}"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"timed out: {where}, and that no firewall drops the traffic"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host ({reason.strerror}): {where}"
    if isinstance(reason, ssl.SSLError):
        return f"TLS error ({reason.reason or reason}): for a self-signed certificate set SSL_CERT_FILE to its CA"
    return f"{reason}: {where}"


@dataclass(frozen=True)
class GrafanaClient:
    """Minimal Grafana HTTP API client: JSON in and out, bearer-token auth."""

    base_url: str
    token: str = field(repr=False)
    timeout: float = 30.0

    def __post_init__(self) -> None:
        parsed = urllib.parse.urlsplit(self.base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise GrafanaError(f"Grafana URL must be http(s)://host[:port], got {self.base_url!r}")
        if parsed.username is not None or parsed.password is not None:
            raise GrafanaError(
                "credentials in the Grafana URL are not used: remove them and pass a service-account "
                f"token in ${GRAFANA_TOKEN} or --token-file"
            )
        if not self.token.strip():
            raise GrafanaError(f"empty Grafana token (set ${GRAFANA_TOKEN} or --token-file)")

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """``method path`` with an optional JSON body; returns the decoded JSON response."""
        url = self.base_url.rstrip("/") + path
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Authorization": f"Bearer {self.token.strip()}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            excerpt = exc.read()[:_BODY_EXCERPT].decode("utf-8", "replace")
            raise GrafanaError(f"{method} {url} -> HTTP {exc.code}: {excerpt}", status=exc.code) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = _unreachable(getattr(exc, "reason", exc), self.base_url)
            raise GrafanaError(f"{method} {url} failed: {reason}") from exc
        try:
            return json.loads(raw) if raw else None
        except ValueError as exc:
            excerpt = raw[:_BODY_EXCERPT].decode("utf-8", "replace")
            raise GrafanaError(f"{method} {url} returned non-JSON: {excerpt}") from exc

    def search_dashboards(self, page_size: int = SEARCH_PAGE_SIZE) -> list[dict[str, Any]]:
        """Every dashboard hit of ``/api/search?type=dash-db``, page by page."""
        hits: list[dict[str, Any]] = []
        page = 1
        while True:
            query = urllib.parse.urlencode({"type": "dash-db", "limit": page_size, "page": page})
            batch = self.request("GET", f"/api/search?{query}")
            if not isinstance(batch, list):
                raise GrafanaError(f"/api/search returned {type(batch).__name__}, expected a list")
            hits.extend(batch)
            if len(batch) < page_size:
                return hits
            page += 1

    def get_dashboard(self, uid: str) -> dict[str, Any]:
        result = self.request("GET", f"/api/dashboards/uid/{urllib.parse.quote(uid, safe='')}")
        if not isinstance(result, dict) or not isinstance(result.get("dashboard"), dict):
            raise GrafanaError(f"/api/dashboards/uid/{uid} returned no dashboard")
        return result

    def folder_exists(self, uid: str) -> bool:
        try:
            self.request("GET", f"/api/folders/{urllib.parse.quote(uid, safe='')}")
        except GrafanaError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def create_folder(self, uid: str, title: str) -> None:
        self.request("POST", "/api/folders", {"uid": uid, "title": title})


def _filename(uid: str) -> str:
    return _SAFE_FILENAME.sub("_", uid) + ".json"


def backup_dashboards(client: GrafanaClient, out_dir: str | Path, page_size: int = SEARCH_PAGE_SIZE) -> list[Path]:
    """Write every dashboard to ``out_dir/<uid>.json``; returns the files written, in search order."""
    hits = client.search_dashboards(page_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for hit in hits:
        uid = hit.get("uid")
        if not isinstance(uid, str) or not uid:
            raise GrafanaError(f"/api/search hit without a uid: {json.dumps(hit)[:_BODY_EXCERPT]}")
        full = client.get_dashboard(uid)
        meta = full.get("meta") or {}
        record = {
            "dashboard": full["dashboard"],
            "folderUid": meta.get("folderUid", ""),
            "folderTitle": meta.get("folderTitle", ""),
        }
        path = out / _filename(uid)
        if path in written:
            raise GrafanaError(f"two dashboards map to the same file {path} (uid {uid!r})")
        path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written


def _restore_payload(document: Any, source: str) -> tuple[dict[str, Any], str, str]:
    """(dashboard, folder uid, folder title) from a backup record or a plain dashboard JSON."""
    if not isinstance(document, dict):
        raise GrafanaError(f"{source}: expected a JSON object")
    if isinstance(document.get("dashboard"), dict):
        dashboard = dict(document["dashboard"])
        folder_uid = str(document.get("folderUid") or (document.get("meta") or {}).get("folderUid") or "")
        folder_title = str(document.get("folderTitle") or (document.get("meta") or {}).get("folderTitle") or folder_uid)
    elif "panels" in document or "uid" in document:
        dashboard, folder_uid, folder_title = dict(document), "", ""
    else:
        raise GrafanaError(f"{source}: neither a grafana-backup file nor a dashboard JSON")
    # The numeric id belongs to the Grafana it came from; the uid identifies the dashboard.
    dashboard["id"] = None
    return dashboard, folder_uid, folder_title


def restore_dashboard(client: GrafanaClient, path: str | Path) -> dict[str, Any]:
    """Create or overwrite the dashboard in ``path``; returns Grafana's response."""
    source = str(path)
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GrafanaError(f"{source}: cannot read JSON: {exc}") from exc
    dashboard, folder_uid, folder_title = _restore_payload(document, source)
    body: dict[str, Any] = {
        "dashboard": dashboard,
        "overwrite": True,
        "message": f"restored by otel-trading grafana-restore from {Path(path).name}",
    }
    if folder_uid:
        if not client.folder_exists(folder_uid):
            client.create_folder(folder_uid, folder_title or folder_uid)
        body["folderUid"] = folder_uid
    result = client.request("POST", "/api/dashboards/db", body)
    return result if isinstance(result, dict) else {}


# --- CLI ---------------------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> GrafanaClient:
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise GrafanaError(f"cannot read --token-file {args.token_file}: {exc}") from exc
    else:
        token = os.environ.get(GRAFANA_TOKEN, "").strip()
    if not token:
        raise GrafanaError(
            f"no Grafana token: set ${GRAFANA_TOKEN} or pass --token-file "
            "(a service-account token with dashboard read/write rights)"
        )
    url = args.url or os.environ.get(GRAFANA_URL) or DEFAULT_GRAFANA_URL
    return GrafanaClient(base_url=url, token=token, timeout=args.timeout)


def _run_backup(args: argparse.Namespace) -> int:
    try:
        files = backup_dashboards(_client(args), args.out)
    except GrafanaError as exc:
        print(f"grafana-backup: {exc}", file=sys.stderr)
        return 1
    for path in files:
        print(path)
    print(f"backed up {len(files)} dashboard(s) to {args.out}", file=sys.stderr)
    return 0


def _run_restore(args: argparse.Namespace) -> int:
    try:
        client = _client(args)
    except GrafanaError as exc:
        print(f"grafana-restore: {exc}", file=sys.stderr)
        return 1
    failures = 0
    for path in args.files:
        try:
            result = restore_dashboard(client, path)
        except GrafanaError as exc:
            print(f"grafana-restore: {exc}", file=sys.stderr)
            failures += 1
            continue
        status, uid, version = result.get("status", "ok"), result.get("uid", "?"), result.get("version", "?")
        print(f"{path}: {status} uid={uid} version={version}")
    return 1 if failures else 0


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=None,
        help=f"Grafana base URL (default: ${GRAFANA_URL}, else {DEFAULT_GRAFANA_URL})",
    )
    parser.add_argument(
        "--token-file",
        default=None,
        metavar="PATH",
        help=f"file holding a service-account token (default: ${GRAFANA_TOKEN})",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default: 30)")


def add_subcommand(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """Register ``grafana-backup`` and ``grafana-restore``; ``args.func(args)`` returns the exit code."""
    backup = subparsers.add_parser(
        "grafana-backup",
        help="save every Grafana dashboard as DIR/<uid>.json (Grafana HTTP API, bearer token)",
    )
    backup.add_argument("--out", required=True, metavar="DIR", help="directory to write the dashboards to")
    _common_options(backup)
    backup.set_defaults(func=_run_backup)

    restore = subparsers.add_parser(
        "grafana-restore",
        help="create or overwrite dashboards from grafana-backup files or dashboard JSON files",
    )
    restore.add_argument("files", nargs="+", metavar="FILE", help="backup or dashboard JSON file(s)")
    _common_options(restore)
    restore.set_defaults(func=_run_restore)
    return backup, restore


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python -m otel_trading.tooling.grafana_backup``) for use without the CLI."""
    parser = argparse.ArgumentParser(prog="python -m otel_trading.tooling.grafana_backup")
    add_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
