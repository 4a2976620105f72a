#!/usr/bin/env python3
"""Where a proxy's CPU goes, slotgate beside twemproxy, in one run.

Starts three Redis cluster masters with slotgate in front (one worker thread) and three
standalone Redis servers with twemproxy (`nutcracker`, Debian's package: a C proxy with one
event loop, ketama over the three) in front, then drives each with redis-benchmark (50 clients,
64-byte values, random keys) in turn, GET, SET and MGET of 10 keys at pipeline 1 and 16, and
prints per proxy: throughput, p50/p99, the proxy's user and system CPU per request, context
switches and system calls per request (the kernel's tracepoints through `perf stat` on the
proxy's process: read/recvfrom, write/writev/sendto, epoll_wait), the Redis servers' CPU per
request, and for slotgate the requests per backend write (INFO proxy). At pipeline 1 slotgate
is also driven through its Unix socket (`sg-unix`), as a sidecar's application would. Each scenario runs
--repeat times, the proxies in turn; medians are printed. Every process it starts is stopped.

    cargo build --release && python3 benches/p1.py [--requests N] [--repeat K] [--record] [--ceiling]
        [--only slotgate,sg-uring] [--scenarios "GET P1,GET P16"]

With --ceiling it also drives slotgate with `--io uring` (`sg-uring`), and builds and drives `benches/forwarder` (its own package, never part of
slotgate) three ways in front of one of the standalone servers: a byte forwarder, one backend
connection per client and no parsing, on tokio (epoll, as slotgate's workers: `fwd-tokio`), on
io_uring (`fwd-uring`), on io_uring set up for one thread (`fwd-defer`: SINGLE_ISSUER,
DEFER_TASKRUN, COOP_TASKRUN), and on a ring set up as slotgate's with registered files and
multishot receives into provided buffers (`fwd-multi`). What the io_uring forwarders save against the tokio one is about
what an io_uring path could save slotgate's socket work.

Needs `perf` and `nutcracker` (apt-get install linux-perf nutcracker), and root or
perf_event_paranoid <= 1 for the tracepoints.
"""
import argparse, csv, io, os, shutil, signal, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import HZ, sh  # noqa: E402

EVENTS = {
    "cs": "context-switches",
    "sys": "raw_syscalls:sys_enter",
    "read": "syscalls:sys_enter_read",
    "recvfrom": "syscalls:sys_enter_recvfrom",
    "write": "syscalls:sys_enter_write",
    "writev": "syscalls:sys_enter_writev",
    "sendto": "syscalls:sys_enter_sendto",
    "epoll_wait": "syscalls:sys_enter_epoll_wait",
    "uring_enter": "syscalls:sys_enter_io_uring_enter",
}


def user_sys(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def wait_ping(port):
    for _ in range(200):
        if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).returncode == 0:
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing answers on {port}")


def run(port, args, n, proxy_pid, redis_pids):
    """One redis-benchmark run through the proxy on `port` (a TCP port, or the path of a Unix
    socket), with perf counting its events."""
    perf_out = tempfile.NamedTemporaryFile(mode="r", suffix=".perf", delete=False)
    perf = subprocess.Popen(["perf", "stat", "-x", ",", "-o", perf_out.name,
                             "-e", ",".join(EVENTS.values()), "-p", str(proxy_pid)])
    time.sleep(0.2)
    u0, s0 = user_sys(proxy_pid)
    r0 = sum(sum(user_sys(p)) for p in redis_pids)
    where = ["-s", port] if isinstance(port, str) else ["-p", str(port)]
    out = subprocess.run(["redis-benchmark"] + where + ["-c", "50", "-n", str(n), "-d", "64",
                          "--csv"] + args, capture_output=True, text=True).stdout
    u1, s1 = user_sys(proxy_pid)
    r1 = sum(sum(user_sys(p)) for p in redis_pids)
    perf.send_signal(signal.SIGINT)
    perf.wait()
    counts = {}
    for line in open(perf_out.name):
        f = line.strip().split(",")
        if len(f) > 2 and f[0].isdigit():
            counts[f[2]] = int(f[0])
    os.unlink(perf_out.name)
    rows = [r for r in csv.reader(io.StringIO(out)) if r and r[0] != "test"]
    if not rows:
        raise SystemExit(f"redis-benchmark gave no result on {port}: {args}\n{out}")
    r = rows[-1]
    per = lambda x: x / n  # noqa: E731
    res = {"rps": float(r[1]), "p50": float(r[4]), "p99": float(r[6]),
           "user_us": per((u1 - u0) / HZ * 1e6), "sys_us": per((s1 - s0) / HZ * 1e6),
           "redis_us": per((r1 - r0) / HZ * 1e6)}
    for k, ev in EVENTS.items():
        res[k] = per(counts.get(ev, 0))
    return res


def record(work, name, port, pid, args, n):
    """`perf record` of the proxy through one run: where its CPU went, by symbol (self time,
    kernel symbols marked [k]), and the kernel's share."""
    data = os.path.join(work, f"{name}.perf.data")
    perf = subprocess.Popen(["perf", "record", "-q", "-F", "2000", "-o", data, "-p", str(pid)],
                            stderr=subprocess.DEVNULL)
    time.sleep(0.2)
    subprocess.run(["redis-benchmark", "-p", str(port), "-c", "50", "-n", str(n), "-d", "64", "-q"]
                   + args, capture_output=True)
    perf.send_signal(signal.SIGINT)
    perf.wait()
    out = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "sym",
                          "--stdio", "-q"], capture_output=True, text=True).stdout
    rows = [l.split(None, 2) for l in out.splitlines() if l.strip() and "%" in l.split()[0]]
    kernel = sum(float(r[0].rstrip("%")) for r in rows if r[1] == "[k]")
    print(f"\n{name}, GET P1, perf record (self time): kernel {kernel:.1f}% of samples; top symbols:")
    for r in rows[:15]:
        print(f"  {r[0]:>7} {r[1]} {r[2][:90]}")
    print()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--base-port", type=int, default=7500)
    ap.add_argument("--binary", default="target/release/slotgate")
    ap.add_argument("--ceiling", action="store_true",
                    help="also drive benches/forwarder on tokio and on io_uring")
    ap.add_argument("--record", action="store_true",
                    help="also `perf record` each proxy through one GET P1 run: top symbols")
    ap.add_argument("--only", help="comma-separated proxies to drive (default: all)")
    ap.add_argument("--scenarios", help="comma-separated scenario names (default: all)")
    opts = ap.parse_args()
    for tool in ("perf", "nutcracker", "redis-benchmark"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed")
    base = opts.base_port
    cluster_ports = [base + i for i in range(3)]
    plain_ports = [base + 10 + i for i in range(3)]
    sg_port, tw_port = base + 50, base + 51
    work = tempfile.mkdtemp(prefix="slotgate-p1-")
    procs = []
    try:
        for p in cluster_ports + plain_ports:
            d = os.path.join(work, str(p))
            os.makedirs(d)
            extra = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"] \
                if p in cluster_ports else []
            procs.append(subprocess.Popen(
                ["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", d, "--logfile", os.path.join(d, "log")] + extra))
        for p in cluster_ports + plain_ports:
            wait_ping(p)
        sh("redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in cluster_ports],
           "--cluster-yes")
        for _ in range(200):
            if "cluster_state:ok" in sh("redis-cli", "-p", str(base), "cluster", "info"):
                break
            time.sleep(0.1)
        time.sleep(1)
        pids = {p: proc.pid for p, proc in zip(cluster_ports + plain_ports, procs)}
        sock = os.path.join(work, "slotgate.sock")
        slotgate = subprocess.Popen([opts.binary, "--listen", f"127.0.0.1:{sg_port}",
                                     "--unix-socket", sock,
                                     "--seed", f"127.0.0.1:{base}", "--log", "warn", "--threads", "1"],
                                    stderr=open(os.path.join(work, "slotgate.log"), "w"))
        procs.append(slotgate)
        conf = os.path.join(work, "nutcracker.yml")
        with open(conf, "w") as f:
            f.write(f"bench:\n  listen: 127.0.0.1:{tw_port}\n  hash: fnv1a_64\n"
                    "  distribution: ketama\n  redis: true\n  preconnect: true\n"
                    "  auto_eject_hosts: false\n  server_connections: 1\n  servers:\n"
                    + "".join(f"   - 127.0.0.1:{p}:1\n" for p in plain_ports))
        twemproxy = subprocess.Popen(["nutcracker", "-c", conf, "-v", "4",
                                      "-o", os.path.join(work, "nutcracker.log"),
                                      "-s", str(base + 52)])
        procs.append(twemproxy)
        wait_ping(sg_port)
        wait_ping(tw_port)
        forwarders = []
        if opts.ceiling:
            # slotgate again, its plaintext TCP sockets on io_uring (`--io uring`).
            sg_uring = subprocess.Popen([opts.binary, "--listen", f"127.0.0.1:{base + 56}",
                                         "--seed", f"127.0.0.1:{base}", "--log", "warn",
                                         "--threads", "1", "--io", "uring"],
                                        stderr=open(os.path.join(work, "sg-uring.log"), "w"))
            procs.append(sg_uring)
            wait_ping(base + 56)
            forwarders.append(("sg-uring", base + 56, sg_uring.pid,
                               [pids[p] for p in cluster_ports]))
            here = os.path.dirname(os.path.abspath(__file__))
            subprocess.run(["cargo", "build", "--release", "-q", "--manifest-path",
                            os.path.join(here, "forwarder", "Cargo.toml")], check=True)
            fwd = os.path.join(here, "forwarder", "target", "release", "slotgate-forwarder")
            for i, mode in enumerate(["tokio", "uring", "uring-defer", "uring-multishot"]):
                port = base + 60 + i
                proc = subprocess.Popen([fwd, "--mode", mode, "--listen", f"127.0.0.1:{port}",
                                         "--backend", f"127.0.0.1:{plain_ports[0]}"])
                procs.append(proc)
                wait_ping(port)
                name = {"tokio": "fwd-tokio", "uring": "fwd-uring", "uring-defer": "fwd-defer",
                        "uring-multishot": "fwd-multi"}
                forwarders.append((name[mode], port, proc.pid, [pids[plain_ports[0]]]))

        n = opts.requests
        mget = ["MGET"] + [f"key{i}:__rand_int__" for i in range(10)]
        scenarios = [
            ("GET P1", ["-t", "get", "-r", "100000", "-P", "1"], n),
            ("SET P1", ["-t", "set", "-r", "100000", "-P", "1"], n),
            ("MGET10 P1", ["-r", "100000", "-P", "1"] + mget, n // 2),
            ("GET P16", ["-t", "get", "-r", "100000", "-P", "16"], n * 5),
            ("SET P16", ["-t", "set", "-r", "100000", "-P", "16"], n * 5),
            ("MGET10 P16", ["-r", "100000", "-P", "16"] + mget, n),
        ]
        proxies = [("slotgate", sg_port, slotgate.pid, [pids[p] for p in cluster_ports]),
                   ("twemproxy", tw_port, twemproxy.pid, [pids[p] for p in plain_ports]),
                   # A sidecar's application on the same host: no TCP on the client's side.
                   ("sg-unix", sock, slotgate.pid, [pids[p] for p in cluster_ports])] \
            + forwarders
        if opts.only:
            keep = opts.only.split(",")
            proxies = [p for p in proxies if p[0] in keep]
        if opts.scenarios:
            keep = opts.scenarios.split(",")
            scenarios = [s for s in scenarios if s[0] in keep]
        print(f"p1 profile: 50 clients, 64-byte values, medians of {opts.repeat} runs, "
              f"{os.cpu_count()} CPUs; per request: CPU in us, events as counts")
        cols = ["rps", "p50", "p99", "user_us", "sys_us", "redis_us", "cs", "sys",
                "read", "recvfrom", "write", "writev", "sendto", "epoll_wait", "uring_enter"]
        print(f"{'scenario':<11} {'proxy':<10} " + " ".join(f"{c:>9}" for c in cols)
              + f" {'req/bwrite':>10}")
        med = statistics.median
        if opts.record:
            for pname, port, pid, _ in proxies[:2]:
                record(work, pname, port, pid, scenarios[0][1], n)
        for name, args, count in scenarios:
            results = {p[0]: [] for p in proxies}
            batch = {}
            for _ in range(max(1, opts.repeat)):
                for pname, port, pid, redis in proxies:
                    if pname == "sg-unix" and "P1" not in name:
                        continue
                    if pname in ("slotgate", "sg-uring"):
                        before = sh("redis-cli", "-p", str(port), "info", "proxy")
                    results[pname].append(run(port, args, count, pid, redis))
                    if pname in ("slotgate", "sg-uring"):
                        after = sh("redis-cli", "-p", str(port), "info", "proxy")
                        field = lambda t, k: int(next(  # noqa: E731
                            l.split(":")[1] for l in t.splitlines() if l.startswith(k + ":")))
                        reqs = field(after, "backend_requests") - field(before, "backend_requests")
                        writes = field(after, "backend_writes") - field(before, "backend_writes")
                        batch.setdefault(pname, []).append(reqs / max(1, writes))
            for pname, _, _, _ in proxies:
                if not results[pname]:
                    continue
                r = {c: med(x[c] for x in results[pname]) for c in cols}
                extra = f" {med(batch[pname]):>10.2f}" if pname in batch else f" {'-':>10}"
                print(f"{name:<11} {pname:<10} {r['rps']:>9.0f} " + " ".join(
                    f"{r[c]:>9.3f}" for c in cols[1:]) + extra, flush=True)
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
