#!/usr/bin/env bash
# Runs every test slotgate has, installing what the tests need first (Debian/Ubuntu, as root):
# redis-server, redis-tools and redis-sentinel from Debian's packages, redis-py from PyPI.
#   deploy/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null || ! command -v redis-sentinel >/dev/null; then
  echo "== installing Redis from Debian's packages"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y redis-server redis-tools redis-sentinel
fi
# The distribution's service is not used by the tests; keep it from holding port 6379.
$SUDO service redis-server stop >/dev/null 2>&1 || true
if ! command -v promtool >/dev/null; then
  echo "== installing promtool (Debian's prometheus package) to check the alert rules"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends prometheus
fi
$SUDO service prometheus stop >/dev/null 2>&1 || true
if ! python3 -c 'import redis, sys; sys.exit(0 if int(redis.__version__.split(".")[0]) >= 8 else 1)' 2>/dev/null; then
  echo "== installing redis-py"
  python3 -m pip install --quiet 'redis==8.1.0'
fi

echo "== versions"
redis-server --version
cargo --version

echo "== format and lints"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings

echo "== tests (unit, end to end against real Redis)"
cargo test --locked --no-fail-fast

echo "== alert rules and Prometheus config"
promtool check rules deploy/observability/slotgate-alerts.yml
promtool check config deploy/observability/prometheus.yml

echo "== example configs"
for f in conf/*.toml; do cargo run --quiet --locked -- --check-config "$f"; done
echo "== all tests passed"
