#!/usr/bin/env bash
# Starts a local 3-master/3-replica Redis Cluster on 127.0.0.1:7000-7005 and slotgate in front
# of it on 127.0.0.1:6380. Ctrl-C stops slotgate; `deploy/cluster.sh stop` stops the cluster.
#
#   deploy/quickstart.sh            # Redis Cluster
#   deploy/quickstart.sh sentinel   # 1 master + 2 replicas + 3 Sentinels, slotgate on 6381
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null || ! command -v redis-sentinel >/dev/null; then
  SUDO=""; if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
  echo "== installing Redis from Debian's packages"
  $SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y redis-server redis-tools redis-sentinel
fi
if [ "${1:-}" = sentinel ]; then
  cargo build --release --locked
  deploy/sentinel.sh setup
  cat <<MSG

slotgate is starting on 127.0.0.1:6381 in front of master "mymaster" (Sentinels 26379-26381).
    redis-cli -p 6381 set greeting hello
    deploy/sentinel.sh failover      # then watch slotgate follow the new master
Stop slotgate with Ctrl-C, the group with: deploy/sentinel.sh stop

MSG
  exec ./target/release/slotgate --config conf/sentinel.toml
fi
cargo build --release --locked
deploy/cluster.sh setup
cat <<MSG

slotgate is starting on 127.0.0.1:6380 in front of the cluster at 127.0.0.1:7000-7005.
Connect with any plain Redis client, for example:
    redis-cli -p 6380 set greeting hello
    redis-cli -p 6380 mget greeting other
    redis-benchmark -p 6380 -t get,set -q
Stop slotgate with Ctrl-C, the cluster with: deploy/cluster.sh stop

MSG
exec ./target/release/slotgate --config conf/local-cluster.toml
