"""What the doctor's checks share: the options, and each URL's answer fetched once and cached."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

from otel_trading.tooling.doctor.http_client import Response, http_get, redact

__all__ = ["DEFAULT_CARDINALITY_THRESHOLD", "Context", "DoctorOptions", "Sample", "Scrape", "parse_exposition"]

DEFAULT_CARDINALITY_THRESHOLD = 200


@dataclass(frozen=True)
class DoctorOptions:
    metrics_url: str
    prometheus_url: str | None = None
    alertmanager_url: str | None = None
    timeout: float = 3.0
    cardinality_threshold: int = DEFAULT_CARDINALITY_THRESHOLD
    cafile: str | None = None
    #: False when ``metrics_url`` is only the default (no ``--metrics-url``): with nothing there,
    #: the doctor uses the target Prometheus scrapes otel-trading metrics from.
    metrics_url_given: bool = True


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass
class Scrape:
    response: Response
    samples: list[Sample] | None = None
    parse_error: str = ""

    @property
    def names(self) -> set[str]:
        return {s.name for s in self.samples or ()}


class Context:
    """Options plus lazily fetched, cached answers, so checks that share a scrape fetch it once."""

    def __init__(self, options: DoctorOptions) -> None:
        self.options = options
        self._cache: dict[str, Any] = {}
        #: The default URL that did not answer, when ``metrics_url`` was found through Prometheus.
        self.default_metrics_url: str | None = None

    def get(self, url: str) -> Response:
        if url not in self._cache:
            self._cache[url] = http_get(url, self.options.timeout, self.options.cafile)
        return self._cache[url]

    def scrape(self) -> Scrape:
        if "scrape" not in self._cache:
            resp = self.get(self.options.metrics_url)
            scrape = Scrape(resp)
            if resp.status == 200:
                try:
                    scrape.samples = parse_exposition(resp.body.decode("utf-8", "replace"))
                except ValueError as exc:
                    scrape.parse_error = str(exc)
            self._cache["scrape"] = scrape
        return self._cache["scrape"]

    def prometheus_api(self, path: str) -> tuple[Any, str]:
        """(data, "") from a Prometheus HTTP API call, or (None, what went wrong)."""
        base = (self.options.prometheus_url or "").rstrip("/")
        resp = self.get(base + path)
        if resp.status is None:
            return None, f"cannot reach Prometheus at {redact(base)}: {resp.error}"
        try:
            payload = resp.json()
        except ValueError:
            return (
                None,
                f"{redact(base)}{path} answered HTTP {resp.status} with non-JSON: is this Prometheus?",
            )
        if resp.status != 200 or payload.get("status") != "success":
            return None, f"{redact(base)}{path} -> HTTP {resp.status}: {payload.get('error', payload)}"
        return payload.get("data"), ""

    def prometheus_targets(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
        """(active targets, dropped targets, "") from Prometheus, or ([], [], what went wrong)."""
        data, error = self.prometheus_api("/api/v1/targets?state=any")
        if data is None:
            return [], [], error
        return list(data.get("activeTargets") or []), list(data.get("droppedTargets") or []), ""

    def prometheus_query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector ([] when Prometheus cannot answer it)."""
        data, _ = self.prometheus_api("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        return list(data.get("result") or []) if isinstance(data, dict) else []

    @property
    def metrics_host_port(self) -> tuple[str, int]:
        parts = urllib.parse.urlsplit(self.options.metrics_url)
        default = 443 if parts.scheme == "https" else 80
        return parts.hostname or "", parts.port or default


def parse_exposition(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition; raises ``ValueError`` if it is not one."""
    from prometheus_client.parser import text_string_to_metric_families

    out: list[Sample] = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.append(Sample(s.name, tuple(sorted(s.labels.items())), float(s.value)))
    return out
