#!/usr/bin/env bash
# Run every unit-test binary given; print one closing line for the whole set.
# UNIT_WRAPPER runs each under a tool (e.g. valgrind).
set -u
read -r -a wrapper <<<"${UNIT_WRAPPER:-}"
pass=0 fail=0 failed=()
for t in "$@"; do
    if "${wrapper[@]}" "$t" >"$t.log" 2>&1; then pass=$((pass + 1)); else fail=$((fail + 1)); failed+=("$t"); cat "$t.log"; fi
done
for t in "${failed[@]}"; do echo "FAILED: $t (log: $t.log)"; done
echo "unit: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
