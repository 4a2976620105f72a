#!/usr/bin/env bash
# End-to-end check of the FROM scratch image (the test command runs it): builds it
# (build-scratch.sh), lints both Dockerfiles (hadolint), starts a 3-master Redis Cluster on the
# host, announced at the address of podman's bridge so that the container reaches it, then runs
# the image as a non-root user on a read-only root filesystem with every capability dropped and
# its ports published on loopback only, and checks through it: commands over every master, a
# split MGET, INFO, /ready and the image's own health check; then that `podman stop` (SIGTERM)
# drains and slotgate exits 0. Every process and container it starts is stopped, also on failure.
#   deploy/docker/image-test.sh [--release]
set -euo pipefail
[ -n "${TRACE:-}" ] && set -x
cd "$(dirname "$0")/../.."

PODMAN=(podman --runtime runc)
ULIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)
name="slotgate-image-test-$$"
# The nodes take connections from the bridge, so they are not in protected mode: they have a
# password, which slotgate gets from its environment, as from a Secret.
password="image-test-$$-$RANDOM"
export REDISCLI_AUTH="$password"
work="$(mktemp -d)"
pids=()
cleanup() {
  "${PODMAN[@]}" rm -f "$name" >/dev/null 2>&1 || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "== hadolint"
hadolint deploy/docker/Dockerfile deploy/docker/Dockerfile.scratch

echo "== building the image"
deploy/docker/build-scratch.sh "$@" --tag localhost/slotgate:test

# The bridge's gateway: the host as containers on podman's default network reach it.
gw="$("${PODMAN[@]}" network inspect podman | python3 -c \
  'import json,sys; print(json.load(sys.stdin)[0]["subnets"][0]["gateway"])')"
echo "bridge gateway: $gw"

# Free ports below 22768, so that cluster bus ports (port + 10000) stay below 32768.
read -r -a ports <<<"$(python3 - <<'PY'
import random, socket
out = []
while len(out) < 5:
    p = random.randint(20000, 22700)
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("0.0.0.0", q)); s.close()
    except OSError:
        continue
    if p not in out:
        out.append(p)
print(*out)
PY
)"
nodes=("${ports[@]:0:3}")
proxy_port="${ports[3]}"
admin_port="${ports[4]}"

# The container first: the bridge exists only while a container uses it, and the nodes bind
# its address. Its config comes from a file mounted read-only, as a ConfigMap is; slotgate
# waits for the cluster to form (startup_timeout_ms).
cat >"$work/slotgate.toml" <<TOML
seeds = ["$gw:${nodes[0]}"]
[topology]
startup_timeout_ms = 60000
TOML
chmod 644 "$work/slotgate.toml"
echo "== the image, waiting for its cluster"
"${PODMAN[@]}" run -d --name "$name" "${ULIMITS[@]}" --read-only --cap-drop=ALL \
  --security-opt no-new-privileges -p "127.0.0.1:$proxy_port:6380" \
  -p "127.0.0.1:$admin_port:9121" -v "$work/slotgate.toml:/etc/slotgate/slotgate.toml:ro" \
  -e SLOTGATE_CONFIG=/etc/slotgate/slotgate.toml -e SLOTGATE_BACKEND_PASSWORD="$password" \
  localhost/slotgate:test >/dev/null
for _ in $(seq 100); do ip -o addr show | grep -q " $gw/" && break; sleep 0.1; done

echo "== a 3-master cluster on $gw (ports ${nodes[*]})"
for p in "${nodes[@]}"; do
  mkdir -p "$work/$p"
  redis-server --port "$p" --bind "127.0.0.1 $gw" --cluster-enabled yes \
    --cluster-config-file nodes.conf --cluster-announce-ip "$gw" --cluster-node-timeout 2000 \
    --dir "$work/$p" --save "" --appendonly no --logfile "$work/$p/log" \
    --requirepass "$password" --masterauth "$password" &
  pids+=($!)
done
for p in "${nodes[@]}"; do
  for _ in $(seq 100); do redis-cli -h "$gw" -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
redis-cli --cluster create "$gw:${nodes[0]}" "$gw:${nodes[1]}" "$gw:${nodes[2]}" --cluster-yes >"$work/create.log" || { cat "$work/create.log"; exit 1; }
for _ in $(seq 100); do
  redis-cli -h "$gw" -p "${nodes[0]}" cluster info | grep -q cluster_state:ok && break
  sleep 0.1
done

echo "== through the image"
ready=""
for _ in $(seq 300); do
  if ready="$(python3 - "$admin_port" <<'PY'
import sys, urllib.request
try:
    print(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/ready", timeout=2).status)
except Exception:
    sys.exit(1)
PY
)"; then break; fi
  sleep 0.1
done
if [ "$ready" != 200 ]; then
  echo "/ready never answered 200"; "${PODMAN[@]}" logs "$name"; exit 1
fi
# slotgate asks its clients for no password.
cli=(env -u REDISCLI_AUTH redis-cli -p "$proxy_port")
user="$("${PODMAN[@]}" inspect -f '{{.Config.User}}' "$name")"
[ "$user" = "65532:65532" ] || { echo "runs as '$user', not 65532:65532"; exit 1; }
# Keys over every master: each owner gets at least one.
for i in $(seq 0 29); do [ "$("${cli[@]}" set "img:$i" "v$i")" = OK ]; done
for p in "${nodes[@]}"; do
  n="$(redis-cli -h "$gw" -p "$p" dbsize)"
  [ "$n" -gt 0 ] || { echo "node $p holds no key"; exit 1; }
done
got="$("${cli[@]}" mget img:0 img:7 img:13 img:29 | tr '\n' ' ')"
[ "$got" = "v0 v7 v13 v29 " ] || { echo "MGET through the image: $got"; exit 1; }
"${cli[@]}" info server | grep -q '^redis_version:7' || { echo "INFO server"; exit 1; }
"${PODMAN[@]}" healthcheck run "$name" || { echo "the image's health check failed"; exit 1; }
echo "commands, MGET over 3 masters, INFO, /ready and the health check answered through the image"

echo "== podman stop: SIGTERM drains, exit 0"
"${PODMAN[@]}" stop -t 10 "$name" >/dev/null
code="$("${PODMAN[@]}" inspect -f '{{.State.ExitCode}}' "$name")"
"${PODMAN[@]}" logs "$name" 2>&1 | grep -q "draining" || { echo "no drain in the log"; exit 1; }
[ "$code" = 0 ] || { echo "exit code $code"; "${PODMAN[@]}" logs "$name"; exit 1; }
echo "== image test passed"
