#!/usr/bin/env bash
# The system programs the test suite drives for real: redis-server (the Redis-mode
# tests start their own) and Debian's Chromium (the browser tests; Playwright never
# downloads a browser here). Installs what is missing when it can (root with apt-get),
# else says what to install; the tests that need a missing program then skip, except
# under CI=true, where they fail.
set -euo pipefail

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
[ -x "${XMLFLOW_CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
    echo "note: ${missing[*]} not installed (sudo apt-get install ${missing[*]});" \
         "the tests that need them will skip" >&2
fi
