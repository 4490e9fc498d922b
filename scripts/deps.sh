#!/usr/bin/env bash
# Install the Debian packages keel needs to build and test, only those missing.
# As root it runs apt-get; otherwise it prints the command to run.
set -euo pipefail
pkgs=(build-essential clang libclang-rt-14-dev libyaml-dev libjson-c-dev zlib1g-dev libnghttp2-dev
      libprotobuf-c-dev protobuf-c-compiler liburing-dev libcmocka-dev python3 python3-pytest python3-grpcio
      python3-grpc-tools curl wrk nghttp2-client nginx prometheus valgrind time)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0
if [[ $EUID -ne 0 ]]; then
    echo "keel: missing packages: ${missing[*]}" >&2
    echo "keel: run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "keel: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
