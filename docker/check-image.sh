#!/usr/bin/env bash
# Builds the image from Dockerfile.dist with podman (no registry needed: FROM scratch and the
# binaries in dist/), inspects it, and runs what it contains the way an engine would. Containers
# cannot be started on the CI machines (podman's runtimes are refused setting rlimits there), so
# the image's filesystem is exported and its entrypoint run by hand: in a network namespace of its
# own where port 443 is unprivileged (as engines set it up), chrooted into the image, as uid 65534,
# with the shipped config.yaml at /app/config.yaml and a writable /app/ca — the compose file's
# mounts. Then /v1/models must answer over TLS for the certificate the entrypoint created.
#
#   cross/build-static.sh && docker/check-image.sh          # both architectures
#   docker/check-image.sh amd64                             # one (arm64 runs under qemu)
set -euo pipefail
cd "$(dirname "$0")/.."

arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(amd64 arm64)
MAX_IMAGE_BYTES=${MAX_IMAGE_BYTES:-4194304} # 4 MiB: the image is the binary and nothing else

fail() { echo "error: $*" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for arch in "${arches[@]}"; do
    image="localhost/trae-proxy:check-$arch"
    [ -f "dist/linux-$arch/trae-proxy" ] || fail "dist/linux-$arch/trae-proxy missing: run cross/build-static.sh"
    podman build -q --platform "linux/$arch" -f Dockerfile.dist -t "$image" . >/dev/null

    # What a user's engine reads from the image.
    inspect() { podman image inspect "$image" --format "$1"; }
    [ "$(inspect '{{.Architecture}}')" = "$arch" ] || fail "$image is for $(inspect '{{.Architecture}}')"
    [ "$(inspect '{{.Config.User}}')" = "65534:65534" ] || fail "user is '$(inspect '{{.Config.User}}')', not 65534:65534"
    [ "$(inspect '{{json .Config.Entrypoint}}')" = '["/trae-proxy","serve","--config","/app/config.yaml"]' ] \
        || fail "entrypoint is $(inspect '{{json .Config.Entrypoint}}')"
    [ "$(inspect '{{json .Config.ExposedPorts}}')" = '{"443/tcp":{}}' ] || fail "exposed: $(inspect '{{json .Config.ExposedPorts}}')"
    [ "$(inspect '{{json .Config.Volumes}}')" = '{"/app/ca":{}}' ] || fail "volumes: $(inspect '{{json .Config.Volumes}}')"
    [ "$(inspect '{{.Config.WorkingDir}}')" = /app ] || fail "working directory: $(inspect '{{.Config.WorkingDir}}')"
    size=$(inspect '{{.Size}}')
    [ "$size" -le "$MAX_IMAGE_BYTES" ] || fail "image is $size bytes, over $MAX_IMAGE_BYTES"

    # Its filesystem, then the mounts docker-compose.yml makes.
    root="$work/$arch"
    mkdir -p "$root"
    container=$(podman create "$image")
    podman export "$container" | tar -x -C "$root"
    podman rm -f "$container" >/dev/null
    files=$(cd "$root" && find . -mindepth 1 | sort | tr '\n' ' ')
    [ "$files" = "./trae-proxy " ] || fail "the image should hold the binary alone, holds: $files"
    mkdir -p "$root/app/ca"
    install -m 0644 config.yaml "$root/app/config.yaml"
    chown 65534:65534 "$root/app/ca" # the README's ownership step

    runner=()
    [ "$arch" = amd64 ] || runner=(qemu-aarch64-static)
    if [ ${#runner[@]} -gt 0 ]; then
        # qemu-user runs outside the chroot's view of the binary: give it the image's copy by path.
        cp "$(command -v qemu-aarch64-static)" "$root/qemu-aarch64-static"
        runner=(/qemu-aarch64-static)
    fi
    unshare --net bash -euo pipefail -c '
        root=$1; shift
        ip link set lo up
        echo 0 >/proc/sys/net/ipv4/ip_unprivileged_port_start # this namespace only
        # As the engine runs the entrypoint: chrooted, uid/gid 65534, no supplementary groups.
        chroot --userspec=65534:65534 "$root" "$@" /trae-proxy serve --config /app/config.yaml \
            2>"$root/../proxy-$(basename "$root").log" &
        proxy=$!
        for _ in $(seq 100); do
            [ -f "$root/app/ca/ca.crt" ] && curl -s -o /dev/null --cacert "$root/app/ca/ca.crt" \
                --resolve api.openai.com:443:127.0.0.1 https://api.openai.com/v1/models && break
            sleep 0.1
        done
        models=$(curl -sS --fail --cacert "$root/app/ca/ca.crt" \
            --resolve api.openai.com:443:127.0.0.1 https://api.openai.com/v1/models)
        kill -TERM "$proxy"; wait "$proxy"
        case "$models" in
            *"\"deepseek-reasoner\""*) ;;
            *) echo "error: /v1/models answered: $models" >&2; exit 1 ;;
        esac
        # The keys were created by uid 65534, owner-only.
        [ "$(stat -c "%u %a" "$root/app/ca/ca.key")" = "65534 600" ] \
            || { echo "error: ca.key is $(stat -c "%u %a" "$root/app/ca/ca.key")" >&2; exit 1; }
    ' check "$root" "${runner[@]}" || { cat "$work/proxy-$arch.log" >&2; fail "the $arch image did not serve"; }
    printf '%s: %s bytes, user 65534, port 443, volume /app/ca; served /v1/models as uid 65534\n' \
        "$image" "$size"
done
