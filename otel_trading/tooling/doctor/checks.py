"""The doctor's checks, in order: endpoint, metrics, reachability, Prometheus, alerts, cardinality, loop, hot paths."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import platform
import sys
import urllib.parse
from collections.abc import Callable
from typing import Any

from otel_trading import metric_contract as mc
from otel_trading.settings import (
    OTEL_EXPORTER_PROMETHEUS_HOST,
    OTEL_METRICS_EXPORTER,
    OTEL_TRADING_DISABLED_METRICS,
    OTEL_TRADING_MAX_LABEL_VALUES,
    OTEL_TRADING_PURE_PYTHON,
)
from otel_trading.tooling.doctor.context import Context, DoctorOptions
from otel_trading.tooling.doctor.host_addresses import hosts_equivalent, is_loopback_host
from otel_trading.tooling.doctor.http_client import redact
from otel_trading.tooling.doctor.results import CheckResult, Status
from otel_trading.tooling.histograms import buckets_from, count_above, quantile, total, worst_bound

__all__ = [
    "CHECKS",
    "GUIDE_ALERTS",
    "assess_bind",
    "check_alert_rules",
    "check_alertmanager",
    "check_cardinality",
    "check_container_reachable",
    "check_documented_metrics",
    "check_event_loop",
    "check_export_path",
    "check_firing_alerts",
    "check_hot_paths",
    "check_metrics_endpoint",
    "check_prometheus_target",
    "check_push_interval",
    "run_doctor",
]

#: The guide's two alerts; deploy/prometheus/rules/trading_alerts.yml carries them verbatim.
GUIDE_ALERTS = ("CircuitBreakerTripped", "HighEventProcessingLatency")


_START_SERVER_FIX = (
    "start the endpoint in the bot: otel_trading.start_metrics_server(port={port}) or configure_metrics() "
    "(OTEL_EXPORTER_PROMETHEUS_PORT={port}), or try `otel-trading demo --port {port}`; check that the bot "
    "process runs and its log shows no start-up error"
)


def check_metrics_endpoint(ctx: Context) -> CheckResult:
    name = "metrics_endpoint"
    url = redact(ctx.options.metrics_url)
    host, port = ctx.metrics_host_port
    scrape = ctx.scrape()
    resp = scrape.response
    found = ""
    if ctx.default_metrics_url is not None:
        found = (
            f"no --metrics-url given and nothing answers at the default {ctx.default_metrics_url}: using "
            f"{url}, where Prometheus scrapes otel-trading metrics; "
        )
    if resp.status is None:
        if "TLS error" in resp.error:
            return CheckResult(name, Status.FAIL, f"{found}cannot reach {url}: {resp.error}", _tls_fix(ctx, resp.error))
        fix = _START_SERVER_FIX.format(port=port)
        if "refused" not in resp.error and urllib.parse.urlsplit(url).scheme == "http":
            fix += "; if the endpoint serves TLS, use an https:// URL"
        if "timed out" in resp.error:
            fix = f"a firewall drops traffic to {host}:{port}, or the bot is stuck; " + fix
        if not ctx.options.metrics_url_given:
            fix = (
                f"no --metrics-url was given, so the doctor tried the default {url} (from "
                f"{OTEL_EXPORTER_PROMETHEUS_HOST}/_PORT, else 127.0.0.1:8000): pass --metrics-url with the bot's "
                "endpoint (with --prometheus-url the doctor also looks among Prometheus' targets); or " + fix
            )
        return CheckResult(name, Status.FAIL, f"{found}cannot reach {url}: {resp.error}", fix)
    if resp.status == 401:
        return CheckResult(
            name,
            Status.FAIL,
            f"{url} requires HTTP basic auth (HTTP 401)",
            "pass the credentials: --metrics-url 'https://USER:PASSWORD@host:port/metrics' (and the same "
            "basic_auth in the Prometheus scrape config)",
        )
    if resp.status != 200:
        return CheckResult(
            name,
            Status.FAIL,
            f"{url} answered HTTP {resp.status}",
            f"point --metrics-url at the bot's /metrics endpoint (port {port}); another service may hold it",
        )
    if scrape.samples is None:
        return CheckResult(
            name,
            Status.FAIL,
            f"{url} answered 200 but not in Prometheus text format: {scrape.parse_error}",
            "point --metrics-url at the bot's metrics endpoint, not at another web service",
        )
    families = {s.name for s in scrape.samples}
    return CheckResult(
        name,
        Status.OK,
        f"{found}{url} answered in {resp.elapsed_ms:.0f} ms: {len(scrape.samples)} samples, {len(families)} names",
        data={"samples": len(scrape.samples), "elapsed_ms": round(resp.elapsed_ms, 1), "url": url},
    )


def _tls_fix(ctx: Context, error: str) -> str:
    if "CERTIFICATE_VERIFY_FAILED" in error or "certificate" in error.lower():
        if "hostname" in error.lower() or "IP address mismatch" in error:
            return (
                "the certificate is not for the host in the URL: use the name (or address) the certificate "
                "was issued for in --metrics-url, or reissue it with that host in its subjectAltName"
            )
        given = f" (--cafile {ctx.options.cafile} did not verify it)" if ctx.options.cafile else ""
        return (
            f"the endpoint's certificate is not trusted here{given}: pass --cafile with the CA certificate that "
            "signed it (PEM; the same file as ca_file in Prometheus' tls_config for this job)"
        )
    return (
        "the TLS handshake failed: check that the URL's port serves TLS, and for mutual TLS "
        "(client_auth_required=True) that is beyond the doctor: check with curl --cert/--key"
    )


def _trading_samples(ctx: Context) -> list[Any]:
    by_name = {n for spec in mc.METRICS for n in spec.series_names}
    return [s for s in ctx.scrape().samples or () if s.name in by_name]


def _pushing_bots(ctx: Context) -> list[tuple[str, str]]:
    """(job, instance) of each bot whose series carry their own job/instance labels: these come from
    each bot's resource (service.name, service.instance.id), as a collector's prometheus exporter
    writes them; the in-process exporter leaves job/instance to the scrape."""
    bots = {
        (labels.get("job", ""), labels.get("instance", ""))
        for s in _trading_samples(ctx)
        if "job" in (labels := dict(s.labels)) or "instance" in labels
    }
    return sorted(bots)


def check_export_path(ctx: Context) -> CheckResult:
    """The bot's own endpoint, or an OpenTelemetry Collector's prometheus exporter (and what to check there)."""
    name = "export_path"
    if ctx.scrape().samples is None:
        return CheckResult(name, Status.SKIP, "no scrape to inspect (see metrics_endpoint)")
    bots = _pushing_bots(ctx)
    if not bots:
        return CheckResult(name, Status.OK, "the bot's own in-process exporter (job and instance come from the scrape)")
    shown = ", ".join(f"{job or '?'}/{instance or '?'}" for job, instance in bots[:10])
    data: dict[str, Any] = {"path": "collector", "bots": [list(b) for b in bots]}
    detail = (
        f"an OpenTelemetry Collector's prometheus exporter (series carry each bot's job/instance): "
        f"{len(bots)} bot(s) push here: {shown}"
    )
    problems: list[str] = []
    fixes: list[str] = []
    if any(not instance for _, instance in bots) or len({i for _, i in bots}) < len(bots):
        problems.append("bots without a distinct instance share series")
        fixes.append(
            "give every bot OTEL_RESOURCE_ATTRIBUTES=service.instance.id=<stable id> (a random id per restart "
            "starts new series)"
        )
    if ctx.options.prometheus_url:
        renamed = ctx.prometheus_query(
            'count by (job, exported_job) ({__name__=~"circuit_breaker_.+|event_bus_.+", exported_job!=""})'
        )
        if renamed:
            jobs = sorted({str(r["metric"].get("job", "?")) for r in renamed})
            problems.append(
                f"Prometheus renamed the bots' job/instance to exported_job/exported_instance (job {', '.join(jobs)})"
            )
            fixes.append("set honor_labels: true on the scrape job of the collector, then reload Prometheus")
    fixes.append(
        "on this path also check: the bots' OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT, :4317 gRPC or "
        "http://...:4318 with http/protobuf), the collector's log for export errors, and its own metrics "
        "(otelcol_receiver_refused_metric_points, otelcol_exporter_send_failed_metric_points on :8888); a stopped "
        "bot's series stay here for metric_expiration (5m)"
    )
    if problems:
        return CheckResult(name, Status.WARN, detail + "; " + "; ".join(problems), "; ".join(fixes), data)
    return CheckResult(name, Status.OK, detail, "; ".join(fixes), data)


#: The interval the dashboard assumes (the Grafana data source's timeInterval, the guide's scrape
#: interval): its $__rate_interval of 1m needs a point at least this often.
DASHBOARD_INTERVAL_S = 15.0


def _push_gaps(ctx: Context) -> dict[tuple[str, str], float]:
    """{(job, instance): median seconds between samples} of bots that push (no ``up`` series)."""
    scraped = {
        (str(r["metric"].get("job", "")), str(r["metric"].get("instance", ""))) for r in ctx.prometheus_query("up")
    }
    gaps: dict[tuple[str, str], float] = {}
    for r in ctx.prometheus_query("target_info[10m]"):
        bot = (str(r["metric"].get("job", "")), str(r["metric"].get("instance", "")))
        times = sorted(float(t) for t, _ in r.get("values") or ())
        if bot in scraped or len(times) < 2:
            continue
        steps = sorted(b - a for a, b in itertools.pairwise(times))
        gaps[bot] = steps[len(steps) // 2]
    return gaps


def check_push_interval(ctx: Context) -> CheckResult:
    """Bots that push (OTLP) must do so at least as often as the dashboard assumes (15 s)."""
    from otel_trading.exporting.configure import push_interval_millis

    name = "push_interval"
    problems: list[str] = []
    exporters = {e.strip() for e in os.environ.get("OTEL_METRICS_EXPORTER", "").split(",")}
    own_s = push_interval_millis() / 1000
    if exporters & {"otlp", "console"} and own_s > DASHBOARD_INTERVAL_S:
        problems.append(f"this environment pushes every {own_s:g} s (OTEL_METRIC_EXPORT_INTERVAL)")
    gaps = _push_gaps(ctx) if ctx.options.prometheus_url else {}
    slow = {bot: gap for bot, gap in gaps.items() if gap > DASHBOARD_INTERVAL_S * 1.5}
    problems.extend(f"{job}/{instance} pushes every {gap:.0f} s" for (job, instance), gap in sorted(slow.items()))
    data = {"dashboard_interval_s": DASHBOARD_INTERVAL_S, "pushing_bots": {f"{j}/{i}": g for (j, i), g in gaps.items()}}
    if problems:
        return CheckResult(
            name,
            Status.WARN,
            "; ".join(problems) + f": the dashboard's rates assume a point every {DASHBOARD_INTERVAL_S:g} s and "
            "show nothing with fewer than two points per 1m window",
            "set OTEL_METRIC_EXPORT_INTERVAL=15000 on the bot (configure_metrics() defaults to it; "
            "opentelemetry-instrument's SDK default is 60000)",
            data,
        )
    if not gaps and not exporters & {"otlp", "console"}:
        return CheckResult(name, Status.SKIP, "no bot pushes metrics here (scraped bots are not affected)", data=data)
    return CheckResult(
        name, Status.OK, f"pushing bots send a point at least every {DASHBOARD_INTERVAL_S:g} s", data=data
    )


# Metrics that only appear once something happened, and what that something is.
_APPEARS_AFTER = {
    mc.BREAKER_TRANSITIONS.key: "a breaker's first state change (normal while every breaker stays CLOSED)",
    mc.BREAKER_LATENCY.key: "the first timed call through a breaker (none with sample_rate=0)",
    mc.BUS_PROCESSING_DURATION.key: "the first event is processed: is the bus started (async with bus / "
    "await bus.start())?",
    mc.BUS_PROCESSED.key: "the first event is processed: is the bus started?",
}


def _present(spec: mc.MetricSpec, names: set[str]) -> bool:
    return any(n in names for n in spec.series_names)


def check_documented_metrics(ctx: Context) -> CheckResult:
    name = "documented_metrics"
    scrape = ctx.scrape()
    if scrape.samples is None:
        return CheckResult(name, Status.SKIP, "no scrape to inspect (see metrics_endpoint)")
    names = scrape.names
    documented = mc.documented_metrics()
    missing = [s for s in documented if not _present(s, names)]
    own = [s for s in mc.METRICS if not s.documented_in_guide]
    own_missing = [s for s in own if not _present(s, names)]
    data = {
        "missing": [s.prometheus_name for s in missing],
        "documented": len(documented),
        "reference": len(mc.METRICS),
        "own_missing": [s.prometheus_name for s in own_missing],
    }
    if not missing:
        detail = (
            f"all {len(documented)} of the guide's metrics are present, and {len(own) - len(own_missing)} of "
            f"otel-trading's own {len(own)} ({len(mc.METRICS) - len(own_missing)} of the {len(mc.METRICS)} in "
            "the Metrics Reference)"
        )
        if not own_missing:
            return CheckResult(name, Status.OK, detail, data=data)
        why = [
            f"{s.prometheus_name} appears after {_APPEARS_AFTER[s.key]}"
            if s.key in _APPEARS_AFTER
            else f"{s.prometheus_name} missing: is it in {OTEL_TRADING_DISABLED_METRICS}?"
            for s in own_missing
        ]
        return CheckResult(name, Status.OK, f"{detail}; not yet: {'; '.join(why)}", data=data)
    missing_names = ", ".join(s.prometheus_name for s in missing)
    if not any(_present(s, names) for s in mc.METRICS):
        is_otel = "target_info" in names or any(key == "otel_scope_name" for s in scrape.samples for key, _ in s.labels)
        if not scrape.samples or is_otel:
            # The OTel exporter serves an empty page until some instrument exists.
            detail = (
                "no otel-trading metric at all, although this looks like an OpenTelemetry Prometheus "
                f"exporter ({'no samples' if not scrape.samples else 'target_info/otel_scope present'}): no "
                "CircuitBreaker/EventBus reports to its MeterProvider"
            )
            fix = (
                "likely causes: components created with metrics_enabled=False; components given another "
                "meter_provider= (or the server started with set_global=False and the provider not passed "
                f"on); {OTEL_TRADING_DISABLED_METRICS} switching them off; or no component created yet"
            )
        else:
            detail = "no otel-trading metric and no OpenTelemetry target_info: not otel-trading's exporter"
            fix = (
                f"wrong exporter selected: {OTEL_METRICS_EXPORTER} must include 'prometheus' "
                "(otlp/console/none send metrics elsewhere), or another process serves this port; components "
                "created with "
                "metrics_enabled=False export nothing either"
            )
        return CheckResult(name, Status.FAIL, f"{detail}; missing: {missing_names}", fix, data)
    reasons: list[str] = []
    for group, label in ((mc.MetricGroup.BREAKER, "CircuitBreaker"), (mc.MetricGroup.EVENT_BUS, "EventBus")):
        group_missing = [s for s in missing if s.group is group]
        if group_missing and len(group_missing) == len([s for s in documented if s.group is group]):
            reasons.append(
                f"no {label} reports here (none created, metrics_enabled=False, or "
                f"{OTEL_TRADING_DISABLED_METRICS}={group.value})"
            )
            missing = [s for s in missing if s.group is not group]
    for spec in missing:
        after = _APPEARS_AFTER.get(spec.key)
        reasons.append(
            f"{spec.prometheus_name} appears after {after}"
            if after
            else f"{spec.prometheus_name} missing: is it in {OTEL_TRADING_DISABLED_METRICS}?"
        )
    return CheckResult(
        name,
        Status.WARN,
        f"missing: {missing_names}",
        "; ".join(reasons) + f"; also check {OTEL_TRADING_DISABLED_METRICS}",
        data,
    )


def assess_bind(host: str, port: int, loopback: bool) -> CheckResult:
    """The container-reachability verdict, from the URL's host alone (no address is probed)."""
    name = "container_reachable"
    if not loopback:
        return CheckResult(
            name,
            Status.OK,
            f"the endpoint answers on {host}:{port}, a non-loopback address: other network namespaces "
            "(containers, other hosts) can reach it unless a firewall blocks them",
        )
    detail = (
        f"the URL's host {host} is loopback and this machine has no other address to probe: a bot "
        "bound to loopback is unreachable from containers"
    )
    fix = (
        f"if Prometheus runs in a container, bind all interfaces: start_metrics_server(addr='0.0.0.0'), "
        f"{OTEL_EXPORTER_PROMETHEUS_HOST}=0.0.0.0 or `otel-trading demo --addr 0.0.0.0` (or the docker "
        "bridge address), and protect /metrics (firewall, basic auth/TLS); Prometheus on this host is fine"
    )
    # "probed" stays in the --json output (always empty): the doctor only talks to the URLs it is given.
    return CheckResult(name, Status.WARN, detail, fix, data={"probed": []})


def check_container_reachable(ctx: Context) -> CheckResult:
    if ctx.scrape().response.status is None:
        return CheckResult("container_reachable", Status.SKIP, "endpoint unreachable (see metrics_endpoint)")
    host, port = ctx.metrics_host_port
    # No probes of this host's other addresses: doctor only talks to the URLs it is given.
    result = assess_bind(host, port, is_loopback_host(host))
    if result.status is Status.WARN and ctx.options.prometheus_url:
        up = [t for t in _my_targets(ctx) if t.get("health") == "up"]
        if up:
            # The documented host set-up (deploy/host/): Prometheus beside the bot. Nothing to fix.
            return CheckResult(
                result.name,
                Status.OK,
                f"the bot answers on loopback ({host}:{port}) and Prometheus scrapes it there "
                f"({_describe_target(up[0])}): Prometheus runs on this host, so the bind is right; a "
                "containerised Prometheus would need the bot bound to 0.0.0.0",
                data={"probed": [], "scraped_by_prometheus": True},
            )
    return result


def _my_targets(ctx: Context) -> list[dict[str, Any]]:
    """Prometheus' active targets scraping the doctor's metrics URL."""
    host, port = ctx.metrics_host_port
    path = urllib.parse.urlsplit(ctx.options.metrics_url).path or "/metrics"
    active, _, _ = ctx.prometheus_targets()

    def matches(t: dict[str, Any]) -> bool:
        t_host, t_port, t_path = _target_endpoint(t)
        return t_port == port and t_path == path and hosts_equivalent(t_host, host)

    return [t for t in active if matches(t)]


def _scraped_trading_targets(ctx: Context) -> list[dict[str, Any]]:
    """Prometheus' up targets whose own job/instance label otel-trading series (the in-process path)."""
    series = ctx.prometheus_query(
        'group by (job, instance) ({__name__=~"circuit_breaker_state|event_bus_queue_size|'
        'otel_trading_label_values_folded_total"})'
    )
    pairs = {(r["metric"].get("job"), r["metric"].get("instance")) for r in series}
    active, _, _ = ctx.prometheus_targets()
    return [
        t
        for t in active
        if t.get("health") == "up" and (t.get("labels", {}).get("job"), t.get("labels", {}).get("instance")) in pairs
    ]


def _target_endpoint(target: dict[str, Any]) -> tuple[str, int, str]:
    parts = urllib.parse.urlsplit(str(target.get("scrapeUrl", "")))
    default = 443 if parts.scheme == "https" else 80
    return parts.hostname or "", parts.port or default, parts.path or "/metrics"


def _describe_target(t: dict[str, Any]) -> str:
    labels = t.get("labels", {})
    text = f"{labels.get('instance', t.get('scrapeUrl'))} (job {labels.get('job', '?')}, {t.get('health')}"
    if t.get("lastError"):
        text += f": {t['lastError']}"
    return text + ")"


def _target_fix(error: str, port: int) -> str:
    if "refused" in error:
        return (
            "Prometheus cannot connect: nothing listens at the scraped address (wrong port in "
            "scrape_configs?), or the bot binds 127.0.0.1 while Prometheus runs in a container (bind "
            f"0.0.0.0, see container_reachable); the bot serves port {port}"
        )
    if "deadline" in error or "timeout" in error.lower():
        return "scrapes time out: a firewall drops them, or raise scrape_timeout if the bot answers slowly"
    if "401" in error or "403" in error:
        return "the endpoint needs credentials: add basic_auth (password_file) to the scrape job"
    if "no such host" in error:
        return "Prometheus cannot resolve the target's host (on Linux map host.docker.internal:host-gateway)"
    return "fix the error Prometheus reports for the target, then wait one scrape_interval"


_ADD_TARGET_FIX = (
    "add the bot to prometheus.yml: scrape_configs: [{{job_name: trading-bot, static_configs: "
    "[{{targets: ['{target}']}}]}}] (from a container: host.docker.internal:{port}); then reload Prometheus "
    "(SIGHUP, or POST /-/reload with --web.enable-lifecycle)"
)


def check_prometheus_target(ctx: Context) -> CheckResult:
    name = "prometheus_target"
    if not ctx.options.prometheus_url:
        return CheckResult(name, Status.SKIP, "not checked", "pass --prometheus-url http://HOST:9090")
    active, dropped, error = ctx.prometheus_targets()
    if error:
        return CheckResult(
            name,
            Status.FAIL,
            error,
            "check the URL (default port 9090) and that Prometheus runs: GET /-/ready",
        )
    host, port = ctx.metrics_host_port
    path = urllib.parse.urlsplit(ctx.options.metrics_url).path or "/metrics"

    def matches(t: dict[str, Any]) -> bool:
        t_host, t_port, t_path = _target_endpoint(t)
        return t_port == port and t_path == path and hosts_equivalent(t_host, host)

    mine = _my_targets(ctx)
    summary = {"targets": [_describe_target(t) for t in active]}
    if mine:
        down = [t for t in mine if t.get("health") == "down"]
        if down:
            err = str(down[0].get("lastError", ""))
            return CheckResult(
                name,
                Status.FAIL,
                "target is down: " + _describe_target(down[0]),
                _target_fix(err, port),
                summary,
            )
        unknown = [t for t in mine if t.get("health") != "up"]
        if unknown:
            return CheckResult(
                name,
                Status.WARN,
                "target listed but not scraped yet: " + _describe_target(unknown[0]),
                "wait one scrape_interval and run doctor again",
                summary,
            )
        t = mine[0]
        return CheckResult(
            name,
            Status.OK,
            f"Prometheus scrapes {_describe_target(t)}, every {t.get('scrapeInterval', '?')}, "
            f"last scrape took {float(t.get('lastScrapeDuration', 0)) * 1000:.0f} ms",
            data=summary,
        )
    if any(matches({"scrapeUrl": t.get("discoveredLabels", {}).get("__address__", "")}) for t in dropped):
        return CheckResult(
            name,
            Status.FAIL,
            f"Prometheus discovered {host}:{port} but dropped it (relabel_configs)",
            "fix the job's relabel_configs so the target is kept",
            summary,
        )
    others = ", ".join(summary["targets"]) or "none"
    if ctx.scrape().response.status is None:
        # Nothing answers at the doctor's URL either: advising Prometheus to scrape it would be wrong.
        scraped = _scraped_trading_targets(ctx)
        if scraped:
            urls = ", ".join(str(t.get("scrapeUrl")) for t in scraped)
            fix = (
                f"Prometheus scrapes otel-trading metrics from {urls} (up): if that is the bot, run the doctor "
                f"with --metrics-url {scraped[0].get('scrapeUrl')}; otherwise start the bot's endpoint at "
                f"{host}:{port} first"
            )
        else:
            fix = (
                f"nothing answers at {host}:{port} either (see metrics_endpoint): start the bot's endpoint first, "
                "then add it to prometheus.yml's scrape_configs and reload Prometheus"
            )
        return CheckResult(
            name,
            Status.FAIL,
            f"Prometheus has no target for {host}:{port}{path}, where nothing answers; its targets: {others}",
            fix,
            summary,
        )
    fix = _ADD_TARGET_FIX.format(target=f"{host}:{port}", port=port)
    same_host_down = [t for t in active if t.get("health") == "down" and hosts_equivalent(_target_endpoint(t)[0], host)]
    if same_host_down:
        wrong = _target_endpoint(same_host_down[0])
        fix = (
            f"Prometheus scrapes {wrong[0]}:{wrong[1]}, which is down, but the bot serves port {port}: wrong "
            f"port in scrape_configs? Change the target to {host}:{port} (or start the bot on {wrong[1]}), "
            "then reload Prometheus"
        )
    return CheckResult(
        name,
        Status.FAIL,
        f"Prometheus has no target for {host}:{port}{path}; its targets: {others}",
        fix,
        summary,
    )


def check_alert_rules(ctx: Context) -> CheckResult:
    name = "alert_rules"
    if not ctx.options.prometheus_url:
        return CheckResult(name, Status.SKIP, "not checked", "pass --prometheus-url http://HOST:9090")
    data, error = ctx.prometheus_api("/api/v1/rules?type=alert")
    if data is None:
        return CheckResult(name, Status.FAIL, error, "check the Prometheus URL")
    groups = data.get("groups") or []
    rules = [r for g in groups for r in g.get("rules", []) if r.get("type", "alerting") == "alerting"]
    load_fix = (
        "add `rule_files: ['rules/*.yml']` to prometheus.yml with deploy/prometheus/rules/trading_alerts.yml "
        "beside it, check with `promtool check config prometheus.yml`, then reload Prometheus"
    )
    if not rules:
        return CheckResult(name, Status.FAIL, "Prometheus has no alerting rules loaded", load_fix)
    names = {r.get("name") for r in rules}
    broken = [r for r in rules if r.get("health") not in (None, "ok", "unknown")]
    firing = sorted({r.get("name") for r in rules if r.get("state") == "firing"})
    data_out = {"rules": len(rules), "groups": len(groups), "firing": firing}
    if broken:
        shown = "; ".join(f"{r.get('name')}: {r.get('lastError')}" for r in broken[:5])
        return CheckResult(
            name,
            Status.FAIL,
            f"{len(broken)} alerting rule(s) fail to evaluate: {shown}",
            "fix the expressions (promtool test rules deploy/prometheus/rules/tests/*.yml)",
            data_out,
        )
    missing = [a for a in GUIDE_ALERTS if a not in names]
    if missing:
        return CheckResult(
            name,
            Status.WARN,
            f"{len(rules)} alerting rules loaded, but not the guide's {', '.join(missing)}",
            load_fix,
            data_out,
        )
    detail = f"{len(rules)} alerting rules in {len(groups)} groups loaded and evaluating"
    if firing:
        detail += f"; firing now: {', '.join(firing)}"
    return CheckResult(name, Status.OK, detail, data=data_out)


#: Labels that say what an alert is about (the rest is routing metadata).
_ALERT_SUBJECT_LABELS = ("name", "event_type", "bus", "loop", "label", "job", "instance")


def _describe_alert(alert: dict[str, Any]) -> str:
    labels = alert.get("labels", {})
    about = ", ".join(f"{k}={labels[k]}" for k in _ALERT_SUBJECT_LABELS if labels.get(k))
    summary = alert.get("annotations", {}).get("summary", "")
    text = f"{labels.get('alertname', '?')} ({labels.get('severity', 'no severity')}) for {about or 'no target label'}"
    return f"{text}: {summary}" if summary else text


def check_firing_alerts(ctx: Context) -> CheckResult:
    """Alerts Prometheus has firing now, each with what it is about (breaker, event type, target)."""
    name = "firing_alerts"
    if not ctx.options.prometheus_url:
        return CheckResult(name, Status.SKIP, "not checked", "pass --prometheus-url http://HOST:9090")
    data, error = ctx.prometheus_api("/api/v1/alerts")
    if data is None:
        return CheckResult(name, Status.FAIL, error, "check the Prometheus URL")
    alerts: list[dict[str, Any]] = data.get("alerts") or []
    firing = [a for a in alerts if a.get("state") == "firing"]
    pending = [a for a in alerts if a.get("state") == "pending"]
    out = {
        "firing": [{"labels": a.get("labels", {}), "summary": a.get("annotations", {}).get("summary")} for a in firing],
        "pending": [a.get("labels", {}) for a in pending],
    }
    later = ""
    if pending:
        later = f"; pending (firing once their `for` has passed): {'; '.join(map(_describe_alert, pending))}"
    if not firing:
        return CheckResult(name, Status.OK, "no alert is firing" + later, data=out)
    critical = [a for a in firing if a.get("labels", {}).get("severity") == "critical"]
    ordered = critical + [a for a in firing if a not in critical]
    runbooks = sorted({a.get("annotations", {}).get("runbook", "") for a in ordered} - {""})
    fix = (
        f"follow the runbook: {', '.join(runbooks)}" if runbooks else "see deploy/README.md, Runbooks"
    ) + "; Alertmanager routes them (check alertmanager)"
    return CheckResult(
        name,
        Status.FAIL if critical else Status.WARN,
        f"{len(firing)} alert(s) firing: " + "; ".join(map(_describe_alert, ordered)) + later,
        fix,
        out,
    )


def check_alertmanager(ctx: Context) -> CheckResult:
    name = "alertmanager"
    opts = ctx.options
    if not opts.alertmanager_url and not opts.prometheus_url:
        return CheckResult(name, Status.SKIP, "not checked", "pass --alertmanager-url http://HOST:9093")
    parts: list[str] = []
    version = ""
    if opts.alertmanager_url:
        base = opts.alertmanager_url.rstrip("/")
        resp = ctx.get(base + "/api/v2/status")
        if resp.status is None or resp.status >= 400:
            ready = ctx.get(base + "/-/ready")
            if ready.status != 200:
                why = resp.error or f"HTTP {resp.status}"
                return CheckResult(
                    name,
                    Status.FAIL,
                    f"cannot reach Alertmanager at {redact(base)}: {why}",
                    "start Alertmanager (default port 9093) and check the URL: GET /-/ready",
                )
        else:
            with contextlib.suppress(ValueError, AttributeError):
                version = resp.json().get("versionInfo", {}).get("version", "")
        parts.append(f"Alertmanager {version or ''} at {redact(base)} is up".replace("  ", " "))
    if opts.prometheus_url:
        data, error = ctx.prometheus_api("/api/v1/alertmanagers")
        if data is None:
            return CheckResult(name, Status.FAIL, error, "check the Prometheus URL")
        urls = [str(a.get("url", "")) for a in data.get("activeAlertmanagers") or []]
        if not urls:
            return CheckResult(
                name,
                Status.FAIL,
                "; ".join([*parts, "Prometheus sends alerts to no Alertmanager"]),
                "add `alerting: {alertmanagers: [{static_configs: [{targets: ['alertmanager:9093']}]}]}` to "
                "prometheus.yml and reload",
            )
        if opts.alertmanager_url:
            am = urllib.parse.urlsplit(opts.alertmanager_url)
            am_port = am.port or 80

            def same(u: str) -> bool:
                p = urllib.parse.urlsplit(u)
                return (p.port or 80) == am_port and hosts_equivalent(p.hostname or "", am.hostname or "")

            if not any(same(u) for u in urls):
                return CheckResult(
                    name,
                    Status.WARN,
                    f"Prometheus sends alerts to {', '.join(urls)}, not to the Alertmanager at "
                    f"{redact(opts.alertmanager_url)}",
                    "point prometheus.yml's alerting.alertmanagers at that Alertmanager",
                )
        parts.append(f"Prometheus sends alerts to {', '.join(urls)}")
    return CheckResult(name, Status.OK, "; ".join(parts))


def check_cardinality(ctx: Context) -> CheckResult:
    name = "cardinality"
    scrape = ctx.scrape()
    if scrape.samples is None:
        return CheckResult(name, Status.SKIP, "no scrape to inspect (see metrics_endpoint)")
    threshold = ctx.options.cardinality_threshold
    by_name = {n: spec for spec in mc.METRICS for n in spec.series_names}
    label_sets: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    series: dict[str, int] = {}
    overflow: set[str] = set()
    sdk_overflow: set[str] = set()
    folded = 0.0
    for s in scrape.samples:
        spec = by_name.get(s.name)
        if spec is None:
            continue
        if spec is mc.LABEL_VALUES_FOLDED:
            folded += s.value
            continue
        key = spec.prometheus_name
        series[key] = series.get(key, 0) + 1
        labels = tuple(kv for kv in s.labels if kv[0] != "le" and not kv[0].startswith("otel_scope_"))
        label_sets.setdefault(key, set()).add(labels)
        values = dict(s.labels)
        if mc.OVERFLOW_LABEL_VALUE in values.values():
            overflow.add(key)
        if values.get("otel_metric_overflow") == "true":
            sdk_overflow.add(key)
    counts = {k: len(v) for k, v in label_sets.items()}
    data = {
        "label_sets": counts,
        "series": series,
        "threshold": threshold,
        "folded_label_values": folded,
    }
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    over = [(k, n) for k, n in top if n > threshold]
    problems: list[str] = []
    fixes: list[str] = []
    if over:
        problems.append(
            "above the threshold of "
            f"{threshold}: " + ", ".join(f"{k} has {n} label sets ({series[k]} series)" for k, n in over)
        )
        fixes.append(
            "derive labels from bounded sets (enums), not data: fewer event classes/breaker names (label "
            "optimization in the guide); disable non-essential metrics with "
            f"{OTEL_TRADING_DISABLED_METRICS}=bus_processing_duration (or a group); scrape less often"
        )
    if overflow or folded:
        problems.append(
            f"{folded:.0f} label values were folded into {mc.OVERFLOW_LABEL_VALUE!r} "
            f"(in {', '.join(sorted(overflow)) or 'no series yet'}); totals stay exact"
        )
        fixes.append(
            f"stop deriving label values from data, or raise {OTEL_TRADING_MAX_LABEL_VALUES} if the values "
            "are genuinely needed"
        )
    if sdk_overflow:
        problems.append(
            "the OpenTelemetry SDK's own 2000-attribute-set limit was hit in "
            f'{", ".join(sorted(sdk_overflow))} (series labelled otel_metric_overflow="true")'
        )
        fixes.append(f"lower {OTEL_TRADING_MAX_LABEL_VALUES} so otel-trading folds before the SDK does")
    if problems:
        return CheckResult(name, Status.WARN, "; ".join(problems), "; ".join(fixes), data)
    if not counts:
        return CheckResult(name, Status.OK, "no otel-trading series to count", data=data)
    largest = ", ".join(f"{k} {n}" for k, n in top[:3])
    return CheckResult(
        name,
        Status.OK,
        f"{sum(series.values())} trading series; most label sets: {largest} (threshold {threshold})",
        data=data,
    )


#: A probe later than this counts as a stall (as in the EventLoopStalled alert and ``otel-trading top``).
_STALL_SECONDS = 0.1


def check_event_loop(ctx: Context) -> CheckResult:
    """Was the bot's event loop blocked? From the lag histogram, since the bot started."""
    name = "event_loop"
    scrape = ctx.scrape()
    if scrape.samples is None:
        return CheckResult(name, Status.SKIP, "no scrape to inspect (see metrics_endpoint)")
    lag = mc.LOOP_LAG
    by_loop: dict[str, dict[float, float]] = {}
    for s in scrape.samples:
        if s.name == lag.prometheus_name + "_bucket":
            labels = dict(s.labels)
            bounds = by_loop.setdefault(labels.get("loop", ""), {})
            bound = float(labels.get("le", "nan"))
            bounds[bound] = bounds.get(bound, 0.0) + s.value
    if not by_loop:
        bus = any(s.name == mc.BUS_QUEUE_SIZE.prometheus_name for s in scrape.samples)
        detail = f"no {lag.prometheus_name} series: " + (
            f"an EventBus reports here, so its loop is monitored once it starts, unless "
            f"{OTEL_TRADING_DISABLED_METRICS} names {lag.group.value} or {lag.key}"
            if bus
            else "no EventBus has started here"
        )
        fix = (
            "an EventBus monitors its loop from start() to stop(); for a loop that runs no bus, call "
            "otel_trading.monitor_event_loop() in one of its coroutines"
        )
        return CheckResult(name, Status.SKIP, detail, fix)
    loops: dict[str, dict[str, float | None]] = {}
    for loop, pairs in sorted(by_loop.items()):
        buckets = buckets_from(pairs.items())
        loops[loop] = {
            "probes": total(buckets),
            "stalls": count_above(buckets, _STALL_SECONDS),
            "p99_seconds": quantile(0.99, buckets),
            "worst_seconds_at_most": worst_bound(buckets),
        }
    stalled = {loop: v for loop, v in loops.items() if v["stalls"]}
    if not stalled:
        summary = "; ".join(
            f"loop {loop}: {v['probes']:.0f} probes, p99 lag {_ms(v['p99_seconds'])}, none later than "
            f"{_STALL_SECONDS * 1000:.0f} ms"
            for loop, v in loops.items()
        )
        return CheckResult(name, Status.OK, summary + " (since the bot started)", data={"loops": _json_safe(loops)})
    detail = "; ".join(
        f"loop {loop} was blocked for more than {_STALL_SECONDS * 1000:.0f} ms {v['stalls']:.0f} time(s) "
        f"since the bot started (the longest at most {_ms(v['worst_seconds_at_most'])})"
        for loop, v in stalled.items()
    )
    fix = (
        "a handler or coroutine blocks the loop (a synchronous HTTP or database call, a heavy computation): "
        "move it off the loop with `await asyncio.to_thread(fn, ...)` (a process pool for CPU work) or use an "
        "async client. `otel-trading top --url URL` shows when stalls happen next to each event type's p99 "
        "processing time; PYTHONASYNCIODEBUG=1 makes asyncio log every callback slower than 100 ms (in a test "
        "environment)"
    )
    return CheckResult(name, Status.WARN, detail, fix, data={"loops": _json_safe(loops)})


def check_hot_paths(ctx: Context) -> CheckResult:
    """Do the library instrumentations installed here run on their compiled hot paths?"""
    name = "hot_paths"
    here = f"{platform.python_implementation()} {platform.python_version()} at {sys.executable}"
    try:
        from otel_trading.instrumentation import fast_path_counts, pure_python_reason
    except ImportError as exc:
        return CheckResult(
            name,
            Status.SKIP,
            f"the instrumentation extra is not installed in this environment ({here}): {exc}",
            "to auto-instrument a bot here: pip install 'otel-trading[instrumentation]'",
        )
    why = pure_python_reason()
    counts = fast_path_counts()
    if why is None:
        return CheckResult(
            name,
            Status.OK,
            f"the library instrumentations run compiled here ({here}); {_fast_path_summary(counts)}",
            data={"compiled": True, "fast_path_counts": counts},
        )
    return CheckResult(
        name,
        Status.WARN,
        f"the library instrumentations run on their pure-Python hot paths here ({here}), about 1.3-2.7x a "
        f"bare call instead of 1.0-1.3x: {why}",
        "install otel-trading from a wheel, or reinstall it where a C compiler and the Python headers are "
        f"(Debian: apt-get install gcc python3-dev); leave {OTEL_TRADING_PURE_PYTHON} unset. The bot must run "
        "in this environment for this check to speak for it",
        data={"compiled": False, "reason": why, "fast_path_counts": counts},
    )


def _fast_path_summary(counts: dict[str, dict[str, tuple[int, int]]]) -> str:
    """The compiled hooks installed in this process, with their fast-path hits and misses."""
    if not counts:
        return (
            "no compiled hook is installed in this process (a bot reads its own with "
            "otel_trading.instrumentation.fast_path_counts())"
        )
    hooks = [
        f"{library} {method} {hits} hit(s), {misses} miss(es)"
        for library, methods in counts.items()
        for method, (hits, misses) in methods.items()
    ]
    return "fast path of the hooks installed in this process: " + "; ".join(hooks)


def _json_safe(loops: dict[str, dict[str, float | None]]) -> dict[str, dict[str, float | None]]:
    """inf (beyond the last bucket) is no JSON number: None there; the detail says "> 10 s"."""
    return {loop: {k: None if v == float("inf") else v for k, v in row.items()} for loop, row in loops.items()}


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds == float("inf"):
        return f"> {mc.LOOP_LAG_BUCKETS[-1]:g} s"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


CHECKS: tuple[Callable[[Context], CheckResult], ...] = (
    check_metrics_endpoint,
    check_export_path,
    check_push_interval,
    check_documented_metrics,
    check_container_reachable,
    check_prometheus_target,
    check_alert_rules,
    check_firing_alerts,
    check_alertmanager,
    check_cardinality,
    check_event_loop,
    check_hot_paths,
)


def run_doctor(options: DoctorOptions) -> list[CheckResult]:
    """Run every check in pipeline order; a bug in one check becomes its own failed result."""
    ctx = _context(options)
    results: list[CheckResult] = []
    for check in CHECKS:
        try:
            results.append(check(ctx))
        except Exception as exc:  # pragma: no cover - defensive: the doctor must always report
            results.append(
                CheckResult(
                    check.__name__.removeprefix("check_"),
                    Status.FAIL,
                    f"the check itself crashed: {exc!r}",
                    "please report this as an otel-trading bug",
                )
            )
    return results


def _context(options: DoctorOptions) -> Context:
    """With no --metrics-url and nothing at the default, the endpoint Prometheus scrapes otel-trading from."""
    ctx = Context(options)
    if options.metrics_url_given or not options.prometheus_url or ctx.scrape().response.status is not None:
        return ctx
    with contextlib.suppress(Exception):  # discovery is a convenience: never a reason to crash
        found = _scraped_trading_targets(ctx)
        if found and found[0].get("scrapeUrl"):
            adopted = Context(dataclasses.replace(options, metrics_url=str(found[0]["scrapeUrl"])))
            adopted.default_metrics_url = redact(options.metrics_url)
            return adopted
    return ctx
