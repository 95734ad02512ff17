#!/usr/bin/env bash
# The system programs the test suite drives for real: redis-server (the Redis-mode
# tests start their own) and Debian's Chromium (the browser tests; Playwright never
# downloads a browser here); and what pip needs to compile the native XML core: gcc,
# expat.h (libexpat1-dev) and the Python headers. Installs what is missing when it can
# (root with apt-get), else says what to install; the tests that need a missing program
# then skip, and without a compiler the pure-Python converter runs; under CI=true both
# fail.
set -euo pipefail
# `system-deps.sh build`: only what building the package needs (`make run`);
# with no argument, also the test programs (`make test`).

PYTHON="${PYTHON:-python3}"
build=()
tests=()
command -v gcc >/dev/null || build+=(gcc)
[ -f /usr/include/expat.h ] || build+=(libexpat1-dev)
include="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
[ -f "$include/Python.h" ] && [ -f "$include/pyexpat.h" ] || build+=(python3-dev)
if [ "${1:-all}" != build ]; then
    command -v redis-server >/dev/null || tests+=(redis-server)
    [ -x "${XMLFLOW_CHROMIUM:-/usr/bin/chromium}" ] || tests+=(chromium)
fi
missing=("${build[@]}" "${tests[@]}")
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
    if [ ${#build[@]} -gt 0 ]; then
        echo "note: ${build[*]} not installed (sudo apt-get install ${build[*]}):" \
             "the native XML core will not be built; the pure-Python converter runs" >&2
    fi
    if [ ${#tests[@]} -gt 0 ]; then
        echo "note: ${tests[*]} not installed (sudo apt-get install ${tests[*]}):" \
             "the tests that need them will skip (under CI=true they fail)" >&2
    fi
fi
