#!/usr/bin/env bash
# Build the Go tools the test suite runs, cached the way collector/build.sh caches the collector,
# and print the binary's absolute path as the LAST line of stdout (everything else on stderr):
#
#   prometheus3=$(bash tools/build_go_tools.sh prometheus | tail -n1)   # Prometheus 3 (v0.316.0 = 3.16)
#   promtool3=$(bash tools/build_go_tools.sh promtool | tail -n1)
#   pint=$(bash tools/build_go_tools.sh pint | tail -n1)                # cloudflare/pint
#
# Needs only Go and the Go module proxy. Binaries land in
#   ${OTEL_TRADING_CACHE_DIR:-$HOME/.cache/otel-trading}/go-tools/<tool>-<version>/<tool>
# and an existing binary is reused (a warm run takes well under a second). Prometheus and promtool
# come from `go install <module>/cmd/<tool>@<version>` (about 4.5 minutes cold on 2 cores). pint is
# built with `go get` into a scratch module and `go build` (about 75 s): the module proxy refuses its
# version listing, so `go install pint@version` fails.
set -euo pipefail

PROMETHEUS_VERSION="v0.316.0"
PINT_VERSION="v0.87.0"

log() { printf '[tools/build_go_tools.sh] %s\n' "$*" >&2; }

tool="${1:?usage: build_go_tools.sh prometheus|promtool|pint}"
if [[ -n "${GO:-}" ]]; then
    :
elif command -v go >/dev/null 2>&1; then
    GO="$(command -v go)"
elif [[ -x /usr/local/go/bin/go ]]; then
    GO=/usr/local/go/bin/go
else
    log "Go is required (install it, put it on PATH or set GO=/path/to/go)"
    exit 1
fi

case "${tool}" in
    prometheus|promtool) version="${PROMETHEUS_VERSION}" ;;
    pint) version="${PINT_VERSION}" ;;
    *) log "unknown tool ${tool} (prometheus, promtool, pint)"; exit 2 ;;
esac

CACHE_ROOT="${OTEL_TRADING_CACHE_DIR:-${HOME:?set HOME or OTEL_TRADING_CACHE_DIR}/.cache/otel-trading}"
OUT_DIR="${CACHE_ROOT}/go-tools/${tool}-${version}"
mkdir -p "${OUT_DIR}"
OUT_DIR="$(cd -- "${OUT_DIR}" && pwd -P)"
BINARY="${OUT_DIR}/${tool}"
if [[ -x "${BINARY}" ]]; then
    log "up to date: ${BINARY}"
    printf '%s\n' "${BINARY}"
    exit 0
fi
if command -v flock >/dev/null 2>&1; then
    exec 9>"${OUT_DIR}/.lock"
    flock 9
    if [[ -x "${BINARY}" ]]; then
        printf '%s\n' "${BINARY}"
        exit 0
    fi
fi

export GOFLAGS="-modcacherw"
export GOTOOLCHAIN="local"
export CGO_ENABLED=0
export GO111MODULE=on
unset GOOS GOARCH GOWORK || true

start=${SECONDS}
WORK="$(mktemp -d "${OUT_DIR}/build.XXXXXX")"
trap 'rm -rf -- "${WORK}"' EXIT
case "${tool}" in
    prometheus|promtool)
        log "go install github.com/prometheus/prometheus/cmd/${tool}@${version} (cold: several minutes)"
        GOBIN="${WORK}" "${GO}" install "github.com/prometheus/prometheus/cmd/${tool}@${version}" >&2
        ;;
    pint)
        log "building cloudflare/pint ${version} in a scratch module"
        (
            cd "${WORK}"
            "${GO}" mod init otel-trading.invalid/pint-build >&2
            "${GO}" get "github.com/cloudflare/pint/cmd/pint@${version}" >&2
            "${GO}" build -o "${WORK}/pint" github.com/cloudflare/pint/cmd/pint >&2
        )
        ;;
esac
[[ -x "${WORK}/${tool}" ]] || { log "build finished but ${WORK}/${tool} is missing"; exit 1; }
mv -f -- "${WORK}/${tool}" "${BINARY}"
log "built in $((SECONDS - start))s: ${BINARY}"
printf '%s\n' "${BINARY}"
