#!/usr/bin/env bash
# Build the otel-trading collector distribution (collector/builder-config.yaml) with the official
# OpenTelemetry Collector Builder (ocb) and print the binary's absolute path as the LAST line of
# stdout. Everything else goes to stderr.
#
#   bin=$(bash collector/build.sh | tail -n1)
#
# Needs only Go (on PATH or at /usr/local/go/bin/go) and the Go module proxy. Nothing is written
# inside the repo: ocb is installed into, and the build done in,
#   ${OTEL_TRADING_CACHE_DIR:-$HOME/.cache/otel-trading}/otelcol/
# and the binary lands at .../otelcol/<sha256 of builder-config.yaml + build.sh>/otelcol-trading.
# When that binary already exists nothing is built (a warm run takes well under a second).
#
# Environment:
#   OTEL_TRADING_CACHE_DIR   cache root (default $HOME/.cache/otel-trading)
#   GO                       go binary to use (default: `go` on PATH, else /usr/local/go/bin/go)
#   OTELCOL_BUILD_FORCE=1    rebuild even when the binary for this hash exists
#   GOMODCACHE / GOCACHE     honoured as usual (Go's defaults otherwise, shared with other builds)
set -euo pipefail

# Must equal the core version pinned in builder-config.yaml.
BUILDER_VERSION="v0.156.0"
DIST_NAME="otelcol-trading"

log() { printf '[collector/build.sh] %s\n' "$*" >&2; }

HERE="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
MANIFEST="${HERE}/builder-config.yaml"
SELF="${HERE}/build.sh"
[[ -f "${MANIFEST}" ]] || { log "missing ${MANIFEST}"; exit 1; }

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
# ocb runs `go` itself, so it has to be on PATH too.
export PATH="$(dirname -- "${GO}"):${PATH}"

if command -v sha256sum >/dev/null 2>&1; then
    HASH="$(cat "${MANIFEST}" "${SELF}" | sha256sum | cut -d' ' -f1)"
else
    HASH="$(cat "${MANIFEST}" "${SELF}" | shasum -a 256 | cut -d' ' -f1)"
fi

CACHE_ROOT="${OTEL_TRADING_CACHE_DIR:-${HOME:?set HOME or OTEL_TRADING_CACHE_DIR}/.cache/otel-trading}"
BASE="${CACHE_ROOT}/otelcol"
OUT_DIR="${BASE}/${HASH}"
BINARY="${OUT_DIR}/${DIST_NAME}"
mkdir -p "${OUT_DIR}"
OUT_DIR="$(cd -- "${OUT_DIR}" && pwd -P)"
BINARY="${OUT_DIR}/${DIST_NAME}"

if [[ -x "${BINARY}" && "${OTELCOL_BUILD_FORCE:-0}" != "1" ]]; then
    log "up to date: ${BINARY}"
    printf '%s\n' "${BINARY}"
    exit 0
fi

# One build per hash at a time (parallel CI jobs / test sessions share the cache).
if command -v flock >/dev/null 2>&1; then
    exec 9>"${OUT_DIR}/.lock"
    flock 9
    if [[ -x "${BINARY}" && "${OTELCOL_BUILD_FORCE:-0}" != "1" ]]; then
        log "built by a concurrent run: ${BINARY}"
        printf '%s\n' "${BINARY}"
        exit 0
    fi
fi

# A predictable Go environment: no vendoring or other surprises from the caller's GOFLAGS, no
# toolchain download, module cache left writable so `rm -rf` of the cache works.
export GOFLAGS="-modcacherw"
export GOTOOLCHAIN="local"
export CGO_ENABLED=0
export GO111MODULE=on
unset GOOS GOARCH GOWORK || true

OCB_DIR="${BASE}/ocb-${BUILDER_VERSION}"
OCB="${OCB_DIR}/builder"
if [[ ! -x "${OCB}" ]]; then
    log "installing ocb ${BUILDER_VERSION} into ${OCB_DIR}"
    mkdir -p "${OCB_DIR}"
    GOBIN="${OCB_DIR}" "${GO}" install "go.opentelemetry.io/collector/cmd/builder@${BUILDER_VERSION}" >&2
fi

WORK="$(mktemp -d "${OUT_DIR}/build.XXXXXX")"
cleanup() { rm -rf -- "${WORK}"; }
trap cleanup EXIT

log "building ${DIST_NAME} with $("${GO}" version) (cold builds take several minutes)"
start=${SECONDS}
# output_path in the manifest is relative (./dist), so it resolves inside ${WORK}; TMPDIR keeps
# ocb's own scratch directory in there too.
(cd "${WORK}" && TMPDIR="${WORK}" "${OCB}" --config="${MANIFEST}") >&2

built="${WORK}/dist/${DIST_NAME}"
[[ -x "${built}" ]] || { log "ocb finished but ${built} is missing"; exit 1; }
mv -f -- "${built}" "${BINARY}.tmp"
mv -f -- "${BINARY}.tmp" "${BINARY}"
log "built in $((SECONDS - start))s: ${BINARY}"
"${BINARY}" --version >&2 || true
printf '%s\n' "${BINARY}"
