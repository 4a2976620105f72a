#!/usr/bin/env bash
# Builds the FROM scratch image of slotgate with no registry: a statically linked binary
# (glibc, -C target-feature=+crt-static), stripped, staged with Dockerfile.scratch, then
# `podman build --pull=never` (runc: crun fails on some kernels' hybrid cgroups).
#   deploy/docker/build-scratch.sh [--release] [--tag NAME]     (default tag localhost/slotgate:scratch)
# --release builds the shipping binary (fat LTO: about 5.5 minutes on 2 CPUs); without it the
# dev profile (about 2 minutes), which the test command uses to keep CI short.
set -euo pipefail
cd "$(dirname "$0")/../.."

release=""
tag="localhost/slotgate:scratch"
while [ $# -gt 0 ]; do
  case "$1" in
    --release) release="--release" ;;
    --tag) tag="$2"; shift ;;
    *) echo "usage: $0 [--release] [--tag NAME]" >&2; exit 2 ;;
  esac
  shift
done

triple="$(rustc -vV | sed -n 's/^host: //p')"
# --target keeps proc-macros (built for the host, dynamically) apart from the static binary.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --locked $release --target "$triple" --bin slotgate
profile_dir="debug"
[ -n "$release" ] && profile_dir="release"
bin="${CARGO_TARGET_DIR:-target}/$triple/$profile_dir/slotgate"
if ldd "$bin" >/dev/null 2>&1 && ! ldd "$bin" 2>&1 | grep -q "statically linked"; then
  echo "$bin is not statically linked" >&2
  exit 1
fi

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
strip -o "$stage/slotgate" "$bin"
cp deploy/docker/Dockerfile.scratch "$stage/Containerfile"
# --format docker keeps HEALTHCHECK (the OCI format has no such field).
podman --runtime runc build --pull=never --format docker -t "$tag" "$stage"
