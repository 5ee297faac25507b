#!/bin/sh
# Installs what benchmarks/anchors.py compares mockex with, outside the repository:
#   wrk         the load generator (Debian package; needs root for apt-get)
#   mountebank  and WireMock (the npm `wiremock` package bundles the standalone jar; it runs on the system java)
# into a cache directory, default ~/.cache/mockex-bench (or $MOCKEX_BENCH_CACHE, or the first argument):
#     sh benchmarks/setup.sh [CACHE_DIR]
# then:  python benchmarks/anchors.py [--cache-dir CACHE_DIR]
# Needs node/npm and java (apt-get install -y nodejs npm default-jre-headless); anchors.py skips what is missing.
set -eu
CACHE="${1:-${MOCKEX_BENCH_CACHE:-$HOME/.cache/mockex-bench}}"

if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }
    else
        echo "wrk missing: run 'sudo apt-get install -y wrk' (anchors.py falls back to its built-in load generator)"
    fi
fi

if command -v npm >/dev/null 2>&1; then
    mkdir -p "$CACHE"
    npm install --prefix "$CACHE" --no-audit --no-fund mountebank@2 wiremock@3
else
    echo "npm missing: mountebank and WireMock not installed (apt-get install -y npm)"
fi
command -v java >/dev/null 2>&1 || echo "java missing: WireMock cannot run (apt-get install -y default-jre-headless)"

echo "installed in $CACHE:"
ls "$CACHE/node_modules/mountebank/bin/mb" "$CACHE"/node_modules/wiremock/build/wiremock-standalone-*.jar 2>/dev/null || true
command -v wrk || true
