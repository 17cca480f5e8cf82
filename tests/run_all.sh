#!/usr/bin/env bash
# The README's test command: installs everything the suite needs on a fresh machine, then runs it.
#   pip packages (into .venv), Debian prometheus + prometheus-alertmanager + tmux, and gcc + the
#   Python headers for the compiled hot paths (as root),
#   the OpenTelemetry Collector built from collector/ with the official builder (needs Go),
#   Prometheus 3, promtool 3 and pint built with Go (tools/build_go_tools.sh). Go builds are cached.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*" >&2; }

log "Debian packages: prometheus, promtool, alertmanager, amtool, tmux (drives otel-trading top in its test), gcc"
# gcc and python3-dev compile otel_trading/instrumentation/*/_hooks.c at `pip install` (setup.py,
# setuptools Extensions with optional=True); a python3 built elsewhere (pyenv) brings its own headers.
if ! command -v promtool >/dev/null || ! command -v amtool >/dev/null || ! command -v prometheus-alertmanager >/dev/null \
  || ! command -v tmux >/dev/null || ! command -v gcc >/dev/null \
  || ! "${PYTHON:-python3}" -c 'import os, sys, sysconfig; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager tmux gcc libc6-dev python3-dev >/dev/null
fi
promtool --version 2>&1 | head -n1
amtool --version 2>&1 | head -n1
tmux -V

log "Python packages (.venv)"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# Eager: the main environment runs on the newest OpenTelemetry the ranges in pyproject.toml allow.
# OTEL_TRADING_WERROR=1: the compiled hot paths must build warning-free (setup.py adds -Werror).
OTEL_TRADING_WERROR=1 .venv/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e '.[test]'
.venv/bin/python -m pip list 2>/dev/null | grep -E '^opentelemetry-(api|sdk) '
# The build goes on without a compiler (pure Python); here the compiled hot paths must be built.
.venv/bin/python -c "from otel_trading.instrumentation import compiled_hot_paths as c; from otel_trading.recording.fast_rows import record, why_not; assert c(), 'compiled hot paths not built'; assert record, why_not; print('compiled hot paths: built')"

log "Python packages, oldest supported OpenTelemetry SDK (.venv-sdk-oldest)"
[ -x .venv-sdk-oldest/bin/python ] || "$PY" -m venv .venv-sdk-oldest
.venv-sdk-oldest/bin/python -m pip install -q --upgrade pip
.venv-sdk-oldest/bin/python -m pip install -q -e '.[test]' 'opentelemetry-api==1.40.*' 'opentelemetry-sdk==1.40.*'
.venv-sdk-oldest/bin/python -m pip list 2>/dev/null | grep -E '^opentelemetry-(api|sdk) '

log "OpenTelemetry Collector (collector/build.sh)"
OTELCOL_BINARY="$(bash collector/build.sh | tail -n 1)"
export OTELCOL_BINARY
"$OTELCOL_BINARY" --version

log "Prometheus 3, promtool 3 and pint (tools/build_go_tools.sh)"
PROMETHEUS3_BINARY="$(bash tools/build_go_tools.sh prometheus | tail -n 1)"
PROMTOOL3_BINARY="$(bash tools/build_go_tools.sh promtool | tail -n 1)"
PINT_BINARY="$(bash tools/build_go_tools.sh pint | tail -n 1)"
export PROMETHEUS3_BINARY PROMTOOL3_BINARY PINT_BINARY
"$PROMETHEUS3_BINARY" --version 2>&1 | head -n1
"$PINT_BINARY" version 2>&1 | head -n1

log "ruff"
.venv/bin/ruff check .

log "mypy (settings in pyproject.toml: check-untyped-defs everywhere, strict on the runtime core)"
.venv/bin/mypy

log "promtool rule unit tests (Prometheus 2.42 and 3; the native-histogram tests with 3 only)"
promtool test rules deploy/prometheus/rules/tests/*.yml
"$PROMTOOL3_BINARY" test rules deploy/prometheus/rules/tests/*.yml deploy/prometheus/rules/tests/native/*.yml

log "pint (offline checks) on the alert rules"
"$PINT_BINARY" --offline --no-color lint deploy/prometheus/rules/*.yml

log "release artifacts: the sdist, and from it a manylinux wheel per CPython 3.10-3.13 with -Wall -Werror"
OTEL_TRADING_WERROR=1 bash tools/build_dists.sh >/dev/null
# tests/integration/test_wheel_install.py installs these instead of building its own.
OTEL_TRADING_WHEELHOUSE="$PWD/dist/wheelhouse"
export OTEL_TRADING_WHEELHOUSE

log "interpreter and library-release matrix (noxfile.py): CPython 3.10-3.13, each library's oldest and newest release"
# The main interpreter runs the whole suite below; nox runs the others, and the oldest releases.
MAIN_VERSION="$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
SESSIONS=()
for version in 3.10 3.11 3.12 3.13; do
  [ "$version" = "$MAIN_VERSION" ] || SESSIONS+=("tests-$version")
done
SESSIONS+=(oldest)
# Installs one after another (each builds the compiled hot paths in place for its interpreter); with
# CI=true nox fails on a missing interpreter.
.venv/bin/nox --install-only -s "${SESSIONS[@]}"
# The tests mostly wait (sleeps, subprocesses, timeouts): the sessions run side by side.
MATRIX_LOGS="$(mktemp -d "${TMPDIR:-/tmp}/otel-trading-matrix.XXXXXX")"
PIDS=()
for session in "${SESSIONS[@]}"; do
  .venv/bin/nox -R -s "$session" >"$MATRIX_LOGS/$session.log" 2>&1 &
  PIDS+=("$!")
done
FAILED=()
for i in "${!SESSIONS[@]}"; do
  wait "${PIDS[$i]}" || FAILED+=("${SESSIONS[$i]}")
done
for session in "${SESSIONS[@]}"; do
  printf '%s: %s\n' "$session" "$(grep -E '^[0-9]+ (passed|failed)|(passed|failed).* in [0-9.]+s' "$MATRIX_LOGS/$session.log" | tr '\n' ' ')" >&2
done
if [ "${#FAILED[@]}" -gt 0 ]; then
  for session in "${FAILED[@]}"; do
    printf '\n== nox session %s failed; its log:\n' "$session" >&2
    cat "$MATRIX_LOGS/$session.log" >&2
  done
  exit 1
fi

# The tests that prove what reaches readers: run again on the oldest supported SDK below.
DATA_PATH_TESTS="tests/unit/test_otel_data_paths.py tests/unit/test_lossless_recording.py \
  tests/unit/test_sdk_binding.py tests/unit/test_component_metrics.py tests/unit/test_cardinality.py \
  tests/unit/test_loop_monitor.py tests/unit/test_exponential_histograms.py tests/unit/test_sdk_reference.py \
  tests/unit/test_histogram_aggregation_config.py \
  tests/unit/test_instrumentation_contract.py tests/unit/test_instrumentation_pybreaker.py \
  tests/integration/test_fork_safety.py"

export PATH="$PWD/.venv/bin:$PATH"
log "data-path tests on the oldest supported SDK (opentelemetry-sdk 1.40)"
.venv-sdk-oldest/bin/python -m pytest -q -p no:cacheprovider $DATA_PATH_TESTS

log "pytest"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"

log "benchmark, quick mode (ratios are reported, not asserted)"
.venv/bin/python bench/run.py --quick --json "${TMPDIR:-/tmp}/otel-trading-bench-quick.json"
