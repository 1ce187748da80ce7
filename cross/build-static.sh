#!/usr/bin/env bash
# Builds fully static release binaries into dist/ without containers, the way
# ../shared/cross-recipe.md verified: rustup's musl std plus Debian's cross gcc.
#
#   cross/build-static.sh                      # aarch64 and x86_64
#   cross/build-static.sh aarch64-unknown-linux-musl
#   INSTALL_DEPS=1 cross/build-static.sh       # first apt-get/rustup what it needs (root)
#
# Each binary must be statically linked; the aarch64 one must fit MAX_AARCH64_BYTES (the size
# budget for small hosts), so it is built with the `small` profile (Cargo.toml: "z" but for the
# HTTP crates), x86_64 with `release` ("s", for CPU per request).
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_AARCH64_BYTES=${MAX_AARCH64_BYTES:-2621440} # 2.5 MiB
# Linked by rust-lld with identical code folding (cross/aarch64-musl-link), which packs the
# segments without page padding: the file grows byte for byte with the code. With binutils' ld
# it grew in 4 KiB steps and was 20 KiB larger.
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-unknown-linux-musl x86_64-unknown-linux-musl)

if [ "${INSTALL_DEPS:-0}" = 1 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
        musl-tools gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static file >/dev/null
fi

mkdir -p dist
for target in "${targets[@]}"; do
    rustup target add "$target" >/dev/null
    profile=release
    [ "$target" = aarch64-unknown-linux-musl ] && profile=small
    cargo build --profile "$profile" --locked --target "$target"
    bin="target/$target/$profile/trae-proxy"
    description=$(cross/is-static.sh "$bin")
    size=$(stat -c %s "$bin")
    printf '%s: %s bytes (%s KiB) — %s\n' "$target" "$size" "$((size / 1024))" "$description"
    if [ "$target" = aarch64-unknown-linux-musl ] && [ "$size" -gt "$MAX_AARCH64_BYTES" ]; then
        echo "error: aarch64 binary is $size bytes, over the budget of $MAX_AARCH64_BYTES" >&2
        exit 1
    fi
    cp "$bin" "dist/trae-proxy-$target"
    # The same file under the container platform's name, for Dockerfile.dist's COPY.
    case "$target" in
        x86_64-*) platform=linux-amd64 ;;
        aarch64-*) platform=linux-arm64 ;;
    esac
    mkdir -p "dist/$platform"
    ln -f "dist/trae-proxy-$target" "dist/$platform/trae-proxy"
done
