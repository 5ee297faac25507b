#!/bin/sh
# The project's test command (README "Quick start"; .ci/run calls exactly this).
# 1. System tools some tests use as independent judges: tshark (Wireshark's dissectors) and chromium (renders the
#    OWA logon page). Installed with apt-get when this runs as root on Debian/Ubuntu; elsewhere those tests are
#    skipped and say why.
# 2. tox: the suite (py3) and the linters (lint), each in its own virtualenv.
set -eu
cd "$(dirname "$0")/.."
for tool in tshark chromium; do
    if ! command -v "$tool" >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q "$tool" >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "$tool" >/dev/null 2>&1; } \
            || echo "scripts/test.sh: could not install $tool; the tests that use it will be skipped" >&2
    fi
done
pip install tox
exec tox "$@"
