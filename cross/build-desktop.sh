#!/usr/bin/env bash
# Builds the desktop binaries into dist/ on this Linux machine, next to the static Linux ones
# (cross/build-static.sh), and writes dist/SHA256SUMS over everything in dist/:
#
#   Windows x86_64  rustup's x86_64-pc-windows-gnu + Debian's mingw-w64 (links statically to
#                   the C runtime: one .exe, no DLLs to ship)
#   macOS arm64 and x86_64  cargo-zigbuild (PyPI `ziglang` + `cargo-zigbuild`): zig links
#                   Mach-O without an Apple SDK. Built, never run here: no macOS machine.
#
#   cross/build-desktop.sh                     # all three
#   cross/build-desktop.sh x86_64-pc-windows-gnu
#   INSTALL_DEPS=1 cross/build-desktop.sh      # first apt-get/pip/rustup what it needs (root)
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: the versions this project's CI builds with.
ZIGLANG_VERSION=0.13.0
CARGO_ZIGBUILD_VERSION=0.24.1

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(x86_64-pc-windows-gnu aarch64-apple-darwin x86_64-apple-darwin)

if [ "${INSTALL_DEPS:-0}" = 1 ]; then
    command -v x86_64-w64-mingw32-gcc >/dev/null || {
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mingw-w64 >/dev/null
    }
    # A virtualenv of its own (as interop/run.sh does): no system pip, no system packages.
    venv=target/zigbuild-venv
    if [ ! -x "$venv/bin/cargo-zigbuild" ]; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check \
            "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION"
    fi
fi
# cargo-zigbuild finds zig through `python3 -m ziglang`: the venv's python first.
[ -x target/zigbuild-venv/bin/cargo-zigbuild ] && export PATH="$PWD/target/zigbuild-venv/bin:$PATH"

mkdir -p dist
for target in "${targets[@]}"; do
    rustup target add "$target" >/dev/null
    case "$target" in
        *-windows-gnu)
            CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc \
                cargo build --release --locked --target "$target"
            bin="target/$target/release/trae-proxy.exe"
            out="dist/trae-proxy-$target.exe"
            ;;
        *-apple-darwin)
            # No SDK here; rustc's note that it could not ask xcrun for one is expected.
            cargo zigbuild --release --locked --target "$target"
            bin="target/$target/release/trae-proxy"
            out="dist/trae-proxy-$target"
            ;;
        *) echo "error: $target is not a desktop target" >&2; exit 2 ;;
    esac
    printf '%s: %s bytes — %s\n' "$target" "$(stat -c %s "$bin")" "$(file -b "$bin")"
    cp "$bin" "$out"
done

# Every binary in dist/ (the static Linux ones included), for users to compare downloads.
(cd dist && sha256sum trae-proxy-* > SHA256SUMS && cat SHA256SUMS)
