#!/usr/bin/env python3
"""TLS benchmark: what terminating TLS costs slotgate, beside Redis' own TLS (OpenSSL), in one run.

Makes certificates with openssl, starts one redis-server with a plaintext port and a TLS port,
and a release slotgate (standalone mode, one worker thread) in front of its plaintext port with
a TLS listener. Then redis-benchmark (50 clients, 64-byte values or --value-size, random keys) runs GET and SET
at pipeline 1 and 16 against: slotgate over TLS, slotgate in plaintext, and Redis' own TLS port.
Per run it prints requests per second and, for the slotgate runs, slotgate's CPU microseconds
per request (utime+stime from /proc). Last, handshakes per second: redis-benchmark with
keep-alive off (-k 0: a new TLS connection per request) against slotgate and Redis' TLS port,
with slotgate's CPU per handshake. Figures are from one run on a shared machine: compare the
rows of one run with each other, not with another run's. Every process it starts is stopped.

With --cluster, slotgate fronts a three-master Redis Cluster (ports 7710-7712, buses below
32768) instead of the one server, as a TLS termination point in front of a cluster is deployed;
the redis-server TLS row stays the one server's own TLS port.

With --aws-lc BINARY, a second slotgate built with the aws-lc-rs provider runs beside the ring
one (rows marked aws-lc-rs), for the provider comparison:

    CARGO_TARGET_DIR=/tmp/awslc cargo build --release --features aws-lc
    python3 benches/tls.py --aws-lc /tmp/awslc/release/slotgate

    cargo build --release && python3 benches/tls.py [--requests N] [--cluster] [--aws-lc BINARY]
"""
import argparse, os, shutil, socket, subprocess, sys, tempfile, time

HZ = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_port(port):
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listens on {port}")


def certs(d):
    script = """
    key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$1" 2>/dev/null; }
    key ca.key; openssl req -x509 -new -key ca.key -out ca.crt -days 2 -subj /CN=bench-ca
    key server.key; openssl req -new -key server.key -out server.csr -subj /CN=localhost
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile server.ext 2>/dev/null
    """
    subprocess.run(["sh", "-ec", script], cwd=d, check=True, capture_output=True)


VALUE_SIZE = 64


def bench(port, test, pipe, n, ca, tls, keepalive=True):
    cmd = ["redis-benchmark", "-p", str(port), "-c", "50", "-n", str(n), "-d", str(VALUE_SIZE),
           "-r", "100000", "-P", str(pipe), "-t", test, "--csv"]
    if tls:
        cmd += ["--tls", "--cacert", ca]
    if not keepalive:
        cmd += ["-k", "0"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if cells and cells[0].upper().startswith(test.upper()):
            return float(cells[1])
    sys.exit(f"no result in: {out}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200000)
    ap.add_argument("--cluster", action="store_true", help="front a 3-master cluster")
    ap.add_argument("--aws-lc", metavar="BINARY",
                    help="also run this slotgate, built with --features aws-lc, in the same run")
    ap.add_argument("--value-size", type=int, default=64, help="bytes per value (redis-benchmark -d)")
    args = ap.parse_args()
    global VALUE_SIZE
    VALUE_SIZE = args.value_size
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = os.path.join(root, "target/release/slotgate")
    d = tempfile.mkdtemp(prefix="slotgate-tls-bench-")
    procs = []
    try:
        certs(d)
        ca = os.path.join(d, "ca.crt")
        rport, rtls = free_port(), free_port()
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(rport), "--tls-port", str(rtls), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--tls-auth-clients", "no",
             "--tls-cert-file", os.path.join(d, "server.crt"),
             "--tls-key-file", os.path.join(d, "server.key"), "--tls-ca-cert-file", ca],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(rport)
        backend = ["--standalone", f"127.0.0.1:{rport}"]
        if args.cluster:
            ports = [7710, 7711, 7712]
            for p in ports:
                nd = os.path.join(d, f"node{p}")
                os.makedirs(nd)
                procs.append(subprocess.Popen(
                    ["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--cluster-enabled", "yes", "--dir", nd],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                wait_port(p)
            subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                            "--cluster-replicas", "0", "--cluster-yes"],
                           check=True, capture_output=True)
            for _ in range(100):
                info = subprocess.run(["redis-cli", "-p", str(ports[0]), "cluster", "info"],
                                      capture_output=True, text=True).stdout
                if "cluster_state:ok" in info:
                    break
                time.sleep(0.1)
            backend = ["--seed", f"127.0.0.1:{ports[0]}"]
        def start(binary):
            plain, tls = free_port(), free_port()
            sg = subprocess.Popen(
                [binary, "--listen", f"127.0.0.1:{plain}", *backend,
                 "--threads", "1", "--log", "warn", "--tls-listen", f"127.0.0.1:{tls}",
                 "--tls-cert", os.path.join(d, "server.crt"), "--tls-key", os.path.join(d, "server.key")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(sg)
            wait_port(plain)
            wait_port(tls)
            return sg, plain, tls
        sg, plain, tls = start(binary)
        # Rows: (name, port, over TLS, the slotgate whose CPU is measured or None).
        rows = [("slotgate TLS", tls, True, sg), ("slotgate plaintext", plain, False, sg)]
        handshakes = [("slotgate", tls, sg)]
        if args.aws_lc:
            sg2, _, tls2 = start(args.aws_lc)
            rows.append(("slotgate TLS (aws-lc-rs)", tls2, True, sg2))
            handshakes.append(("slotgate (aws-lc-rs)", tls2, sg2))
        rows.append(("redis-server TLS (OpenSSL)", rtls, True, None))
        handshakes.append(("redis-server (OpenSSL)", rtls, None))
        print(f"{'run':44} {'req/s':>10} {'slotgate us/req':>16}")

        def row(label, rps, us):
            print(f"{label:44} {rps:10.0f} {us:16.2f}" if us is not None else f"{label:44} {rps:10.0f} {'-':>16}")
        for test in ("get", "set"):
            for pipe in (1, 16):
                n = args.requests * (5 if pipe > 1 else 1)
                for name, port, over_tls, proc in rows:
                    before = cpu_ticks(proc.pid) if proc else 0
                    rps = bench(port, test, pipe, n, ca, over_tls)
                    us = (cpu_ticks(proc.pid) - before) / HZ * 1e6 / n if proc else None
                    row(f"{test.upper()} P{pipe} {name}", rps, us)
        n = max(args.requests // 20, 2000)
        for name, port, proc in handshakes:
            before = cpu_ticks(proc.pid) if proc else 0
            rps = bench(port, "ping_inline", 1, n, ca, True, keepalive=False)
            us = (cpu_ticks(proc.pid) - before) / HZ * 1e6 / n if proc else None
            row(f"new TLS connection per PING, {name}", rps, us)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
