#!/usr/bin/env bash
# End-to-end tests: real processes on 127.0.0.1, driven by Debian's pytest.
# KEEL_BIN picks the binary (default build/keel); KEEL_WRAPPER runs keel under a tool.
# Arguments (test files, -k ...) replace the default of the whole tests/e2e directory.
set -u
export KEEL_BIN=${KEEL_BIN:-build/keel}
if [[ $# -eq 0 ]]; then set -- tests/e2e; fi
exec /usr/bin/python3 -m pytest -q -p no:cacheprovider "$@"
