#!/usr/bin/env bash
# Runs the integration suite against the Windows build under Debian's wine, the way CI runs it
# against the aarch64 build under qemu. Tests of what Windows does not have (signals, Unix
# modes, rlimits, privileged ports) skip themselves there with a note; everything else — TLS,
# routing, streams, failover, usage, the status page, `reload`, the CLI — runs as on Linux.
#
#   cross/build-desktop.sh x86_64-pc-windows-gnu && windows/test-under-wine.sh [cargo test args]
#
# Wine 8 lacks bcryptprimitives.dll, whose ProcessPrng Rust's std imports: a test-only stand-in
# (windows/bcryptprimitives-shim.c) is built with mingw and put next to the .exe. Never shipped.
set -euo pipefail
cd "$(dirname "$0")/.."

exe="$PWD/target/x86_64-pc-windows-gnu/release/trae-proxy.exe"
[ -f "$exe" ] || { echo "error: $exe missing: run cross/build-desktop.sh x86_64-pc-windows-gnu" >&2; exit 1; }
command -v wine >/dev/null || { echo "error: wine is not installed (apt-get install wine wine64)" >&2; exit 1; }
x86_64-w64-mingw32-gcc -O2 -shared -o "$(dirname "$exe")/bcryptprimitives.dll" \
    windows/bcryptprimitives-shim.c -ladvapi32

# A prefix of our own, made once (wine's first start takes ~15 s), quiet.
export WINEPREFIX="${WINEPREFIX:-$PWD/target/wineprefix}" WINEDEBUG=-all
wine "$exe" --version
TRAE_PROXY_TEST_BIN="$exe" TRAE_PROXY_TEST_RUNNER=wine cargo test --test it "$@"
wineserver -k 2>/dev/null || true
