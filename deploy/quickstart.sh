#!/usr/bin/env bash
# Starts a local 3-master/3-replica Redis Cluster on 127.0.0.1:7000-7005 and slotgate in front
# of it on 127.0.0.1:6380. Ctrl-C stops slotgate; `deploy/cluster.sh stop` stops the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "Redis is not installed: apt-get update && apt-get install -y redis-server redis-tools" >&2
  exit 1
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
