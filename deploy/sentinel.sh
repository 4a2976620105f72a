#!/usr/bin/env bash
# A local Sentinel group on loopback: 1 master + 2 replicas + 3 Sentinels (quorum 2).
#
#   deploy/sentinel.sh setup|stop|status|failover|clean
#
# Ports: master SENTINEL_BASE_PORT (default 6390), replicas +1 and +2; Sentinels 26379-26381.
# Data and logs: SENTINEL_DIR (default ./.sentinel).
set -euo pipefail

BASE=${SENTINEL_BASE_PORT:-6390}
DIR=${SENTINEL_DIR:-$(pwd)/.sentinel}
SENTINELS=(26379 26380 26381)

need() { command -v "$1" >/dev/null || { echo "missing $1: apt-get install -y redis-server redis-tools redis-sentinel" >&2; exit 1; }; }
wait_ping() { for _ in $(seq 1 50); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }

case "${1:-}" in
  setup)
    need redis-server; need redis-sentinel
    for i in 0 1 2; do
      p=$((BASE + i)); mkdir -p "$DIR/$p"
      redis-cli -p "$p" ping >/dev/null 2>&1 && continue
      extra=(); [ "$i" -gt 0 ] && extra=(--replicaof 127.0.0.1 "$BASE")
      redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no --dir "$DIR/$p" \
        --logfile "$DIR/$p/redis.log" --daemonize yes "${extra[@]}"
      wait_ping "$p"
    done
    for s in "${SENTINELS[@]}"; do
      redis-cli -p "$s" ping >/dev/null 2>&1 && continue
      mkdir -p "$DIR/s$s"
      cat > "$DIR/s$s/sentinel.conf" <<CONF
port $s
bind 127.0.0.1
daemonize yes
dir $DIR/s$s
logfile $DIR/s$s/sentinel.log
sentinel monitor mymaster 127.0.0.1 $BASE 2
sentinel down-after-milliseconds mymaster 2000
sentinel failover-timeout mymaster 10000
CONF
      redis-sentinel "$DIR/s$s/sentinel.conf"
      wait_ping "$s"
    done
    echo "Sentinel group up: master 127.0.0.1:$BASE, Sentinels ${SENTINELS[*]}, master name mymaster"
    ;;
  stop)
    for s in "${SENTINELS[@]}"; do redis-cli -p "$s" shutdown nosave >/dev/null 2>&1 || true; done
    for i in 0 1 2; do redis-cli -p $((BASE + i)) shutdown nosave >/dev/null 2>&1 || true; done
    echo "Sentinel group stopped"
    ;;
  status)
    redis-cli -p "${SENTINELS[0]}" sentinel get-master-addr-by-name mymaster | paste -sd: | sed 's/^/master: /'
    for i in 0 1 2; do p=$((BASE + i)); echo "127.0.0.1:$p $(redis-cli -p "$p" role 2>/dev/null | head -1 || echo down)"; done
    ;;
  failover) redis-cli -p "${SENTINELS[0]}" sentinel failover mymaster ;;
  clean) "$0" stop; rm -rf "$DIR"; echo "removed $DIR" ;;
  *) echo "usage: $0 setup|stop|status|failover|clean" >&2; exit 2 ;;
esac
