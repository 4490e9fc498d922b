#!/usr/bin/env bash
# End-to-end tests: real processes on 127.0.0.1, driven by Debian's pytest.
# KEEL_BIN picks the binary (default build/keel). Extra args go to pytest.
set -u
export KEEL_BIN=${KEEL_BIN:-build/keel}
exec /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/e2e "$@"
