#!/bin/sh
# The one rule for "is this binary fully static", shared by cross/build-static.sh and the
# Dockerfile's build stage: `file` calls a static musl build "statically linked" on aarch64 and
# "static-pie linked" on x86_64 (Rust's default for that target); both are static. Prints the
# description; exits 1 (with a message) for anything that needs a loader or shared libraries.
# POSIX sh: the Docker build stage has no bash guarantee.
set -eu
bin=$1
description=$(file -b "$bin")
case "$description" in
    *"statically linked"* | *"static-pie linked"*) printf '%s\n' "$description" ;;
    *) printf 'error: %s is not statically linked: %s\n' "$bin" "$description" >&2; exit 1 ;;
esac
