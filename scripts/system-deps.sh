#!/usr/bin/env bash
# The system programs the test suite drives for real: redis-server (the Redis-mode
# tests start their own) and Debian's Chromium (the browser tests; Playwright never
# downloads a browser here); and what pip needs to compile the native XML core: gcc,
# expat.h (libexpat1-dev) and the Python headers. Installs what is missing when it can
# (root with apt-get), else says what to install; the tests that need a missing program
# then skip, and without a compiler the pure-Python converter runs; under CI=true both
# fail.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
[ -x "${XMLFLOW_CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium)
command -v gcc >/dev/null || missing+=(gcc)
[ -f /usr/include/expat.h ] || missing+=(libexpat1-dev)
include="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
[ -f "$include/Python.h" ] && [ -f "$include/pyexpat.h" ] || missing+=(python3-dev)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
    echo "note: ${missing[*]} not installed (sudo apt-get install ${missing[*]});" \
         "the tests that need them will skip, the native XML core will not be built" >&2
fi
