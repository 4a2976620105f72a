#!/usr/bin/env bash
# A local Redis Cluster on loopback for trying slotgate: 3 masters + 3 replicas.
#
#   deploy/cluster.sh setup|start|stop|status|test|clean
#
# Ports: CLUSTER_BASE_PORT (default 7000) .. +5, bus ports +10000 (all below 32768).
# Data and logs: CLUSTER_DIR (default ./.cluster).
set -euo pipefail

BASE=${CLUSTER_BASE_PORT:-7000}
DIR=${CLUSTER_DIR:-$(pwd)/.cluster}
NODES=6
PORTS=()
for i in $(seq 0 $((NODES - 1))); do PORTS+=($((BASE + i))); done

need() { command -v "$1" >/dev/null || { echo "missing $1: apt-get install -y redis-server redis-tools" >&2; exit 1; }; }

start_nodes() {
  need redis-server
  for p in "${PORTS[@]}"; do
    mkdir -p "$DIR/$p"
    if redis-cli -p "$p" ping >/dev/null 2>&1; then continue; fi
    redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
      --save "" --appendonly no --dir "$DIR/$p" --logfile "$DIR/$p/redis.log" --daemonize yes
  done
  for p in "${PORTS[@]}"; do
    for _ in $(seq 1 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
    if ! redis-cli -p "$p" ping >/dev/null 2>&1; then
      echo "redis-server on port $p did not start (its bus port is $((p + 10000))):" >&2
      tail -3 "$DIR/$p/redis.log" >&2 || true
      echo "set CLUSTER_BASE_PORT to use other ports" >&2
      exit 1
    fi
  done
}

wait_ok() {
  for _ in $(seq 1 100); do
    if redis-cli -p "$BASE" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; then return 0; fi
    sleep 0.2
  done
  echo "cluster did not reach state ok" >&2; return 1
}

case "${1:-}" in
  setup)
    need redis-cli
    start_nodes
    if redis-cli -p "$BASE" cluster info | grep -q 'cluster_slots_assigned:16384'; then
      echo "cluster already set up"
    else
      addrs=(); for p in "${PORTS[@]}"; do addrs+=("127.0.0.1:$p"); done
      redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
    fi
    wait_ok
    echo "cluster up: seeds 127.0.0.1:$BASE..$((BASE + NODES - 1))"
    ;;
  start) start_nodes; wait_ok; echo "cluster started" ;;
  stop)
    for p in "${PORTS[@]}"; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
    echo "cluster stopped"
    ;;
  status)
    for p in "${PORTS[@]}"; do
      if role=$(redis-cli -p "$p" role 2>/dev/null | head -1); then echo "127.0.0.1:$p $role"; else echo "127.0.0.1:$p down"; fi
    done
    redis-cli -p "$BASE" cluster info 2>/dev/null | grep -E 'cluster_state|slots_ok|known_nodes' || true
    ;;
  test)
    redis-cli -c -p "$BASE" set slotgate:probe ok >/dev/null
    [ "$(redis-cli -c -p "$BASE" get slotgate:probe)" = ok ] && echo "cluster answers" ;;
  clean) "$0" stop; rm -rf "$DIR"; echo "removed $DIR" ;;
  *) echo "usage: $0 setup|start|stop|status|test|clean" >&2; exit 2 ;;
esac
