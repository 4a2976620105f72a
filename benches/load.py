#!/usr/bin/env python3
"""Load harness: slotgate against the cluster it fronts, measured in one run.

Starts a 3-master/3-replica cluster on loopback (ports BASE..BASE+5, bus ports +10000) and a
release slotgate in front of it, then drives both with redis-benchmark (50 clients, 64-byte
values, random keys) and prints, per scenario: throughput through slotgate and directly
(`redis-benchmark --cluster`), their ratio, p50/p99 latency, and slotgate's own CPU time per
request (utime+stime from /proc). A second table splits the CPU each run used per request
between redis-benchmark, the Redis nodes and slotgate, with the share of the machine's CPUs in
use and the share of the run slotgate waited for a CPU, and gives the ratio the two runs would
stand in if both kept every CPU busy. Each scenario runs --repeat times, slotgate and direct in
turn, and the medians are printed (the ratio is the median of the per-pair ratios), so that a
burst of load from elsewhere on a shared machine moves one pair, not the figure. Pipelined
scenarios send 5x the requests, so that a run lasts long enough to time. Every process it starts
is stopped when it ends.

    cargo build --release && python3 benches/load.py [--requests N] [--threads N] [--repeat K]
        [--read-from POLICY]

With --read-from (prefer-replica, same-zone ...), a second slotgate reads under that policy and
the GET scenarios run through it too, beside the master-only run; the GETs each node served in
those runs (its INFO commandstats) are printed after the tables.
"""
import argparse, csv, io, os, resource, shutil, signal, statistics, subprocess, sys, tempfile, time

HZ = os.sysconf("SC_CLK_TCK")


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def runqueue_wait_ns(pid):
    """Nanoseconds the threads of `pid` have spent runnable but waiting for a CPU."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as f:
            total += int(f.read().split()[1])
    return total


def machine_ticks():
    """(busy, total) jiffies of the whole machine, all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:8]]
    return sum(v) - v[3] - v[4], sum(v)


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def bench(port, args, cluster=False, n=200000, pids=()):
    """One redis-benchmark run. Besides its figures: CPU microseconds per request of the
    benchmark itself and of each group of `pids`, and the share of the machine's CPUs in use."""
    cmd = ["redis-benchmark", "-p", str(port), "-c", "50", "-n", str(n), "-d", "64", "--csv"]
    if cluster:
        cmd.append("--cluster")
    before = [sum(cpu_ticks(p) for p in group) for group in pids]
    w0 = [runqueue_wait_ns(g[0]) for g in pids]
    m0, c0, t0 = machine_ticks(), children_cpu(), time.monotonic()
    out = subprocess.run(cmd + args, capture_output=True, text=True).stdout
    m1, c1, t1 = machine_ticks(), children_cpu(), time.monotonic()
    w1 = [runqueue_wait_ns(g[0]) for g in pids]
    after = [sum(cpu_ticks(p) for p in group) for group in pids]
    rows = [r for r in csv.reader(io.StringIO(out)) if r and r[0] != "test"]
    if not rows:
        raise SystemExit(f"redis-benchmark gave no result: {' '.join(cmd + args)}\n{out}")
    r = rows[-1]
    return {"rps": float(r[1]), "p50": float(r[4]), "p99": float(r[6]),
            "bench_us": (c1 - c0) * 1e6 / n,
            "pids_us": [(b - a) / HZ * 1e6 / n for a, b in zip(before, after)],
            "busy": (m1[0] - m0[0]) / max(1, m1[1] - m0[1]),
            # Share of the run the first process of each group was ready to run but had no CPU.
            "waits": [(b - a) / 1e9 / max(1e-9, t1 - t0) for a, b in zip(w0, w1)]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200000)
    ap.add_argument("--base-port", type=int, default=7400)
    ap.add_argument("--threads", type=int, default=0, help="slotgate worker threads (0: default)")
    ap.add_argument("--binary", default="target/release/slotgate")
    ap.add_argument("--repeat", type=int, default=3, help="runs per scenario (medians printed)")
    ap.add_argument("--read-from", default=None,
                    help="also run the GET scenarios through a slotgate with this read policy")
    opts = ap.parse_args()
    if not os.path.exists(opts.binary):
        raise SystemExit("build first: cargo build --release")
    base = opts.base_port
    ports = [base + i for i in range(6)]
    work = tempfile.mkdtemp(prefix="slotgate-load-")
    procs = []
    try:
        for p in ports:
            d = os.path.join(work, str(p))
            os.makedirs(d)
            procs.append(subprocess.Popen(
                ["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no", "--dir", d,
                 "--logfile", os.path.join(d, "log")]))
        for p in ports:
            for _ in range(100):
                if subprocess.run(["redis-cli", "-p", str(p), "ping"], capture_output=True).returncode == 0:
                    break
                time.sleep(0.05)
        sh("redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
           "--cluster-replicas", "1", "--cluster-yes")
        for _ in range(200):
            if "cluster_state:ok" in sh("redis-cli", "-p", str(base), "cluster", "info"):
                break
            time.sleep(0.1)
        time.sleep(1)
        proxy_port = base + 50
        proxy = subprocess.Popen([opts.binary, "--listen", f"127.0.0.1:{proxy_port}",
                                  "--seed", f"127.0.0.1:{base}", "--log", "warn",
                                  "--threads", str(opts.threads)],
                                 stderr=open(os.path.join(work, "slotgate.log"), "w"))
        redis_pids = [p.pid for p in procs]
        procs.insert(0, proxy)
        policy_port = base + 51
        policy_proxy = None
        if opts.read_from:
            policy_proxy = subprocess.Popen(
                [opts.binary, "--listen", f"127.0.0.1:{policy_port}", "--seed", f"127.0.0.1:{base}",
                 "--log", "warn", "--threads", str(opts.threads), "--read-from", opts.read_from],
                stderr=open(os.path.join(work, "slotgate-reads.log"), "w"))
            procs.insert(0, policy_proxy)
            for _ in range(100):
                if subprocess.run(["redis-cli", "-p", str(policy_port), "ping"],
                                  capture_output=True).returncode == 0:
                    break
                time.sleep(0.05)
            # Redis 7.0 lists a fresh replica as loading in CLUSTER SHARDS for a while: wait
            # until the second slotgate has every replica taking reads.
            for _ in range(300):
                nodes = sh("redis-cli", "-p", str(policy_port), "info", "nodes")
                if nodes.count("reads=serving") >= 3:
                    break
                time.sleep(0.1)
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(proxy_port), "ping"], capture_output=True).returncode == 0:
                break
            time.sleep(0.05)

        n = opts.requests
        mget_tag = ["MGET"] + [f"{{t}}:key:__rand_int__:{i}" for i in range(10)]
        mget_spread = ["MGET"] + [f"key{i}:__rand_int__" for i in range(10)]
        scenarios = [
            ("SET  P1", ["-t", "set", "-r", "100000", "-P", "1"], True),
            ("GET  P1", ["-t", "get", "-r", "100000", "-P", "1"], True),
            ("SET  P16", ["-t", "set", "-r", "100000", "-P", "16"], True),
            ("GET  P16", ["-t", "get", "-r", "100000", "-P", "16"], True),
            ("MGET10 one slot P1", ["-r", "100000", "-P", "1"] + mget_tag, "owner"),
            ("MGET10 spread P1", ["-r", "100000", "-P", "1"] + mget_spread, False),
        ]
        # redis-benchmark --cluster cannot run a custom multi-key command; the direct figure for
        # the one-slot MGET is the master that owns {t}, asked without a proxy.
        owner = next(p for p in ports
                     if not subprocess.run(["redis-cli", "-p", str(p), "get", "{t}"],
                                           capture_output=True, text=True).stdout.startswith(("MOVED", "READONLY"))
                     and "role:master" in sh("redis-cli", "-p", str(p), "info", "replication"))
        print(f"slotgate load harness: 50 clients, 64-byte values, {n} requests per run "
              f"({5 * n} pipelined), medians of {opts.repeat} runs, "
              f"{os.cpu_count()} CPUs, redis {sh('redis-server', '--version').split()[2]}")
        if policy_proxy:
            scenarios += [
                (f"GET  P1 {opts.read_from}", ["-t", "get", "-r", "100000", "-P", "1"], False),
                (f"GET  P16 {opts.read_from}", ["-t", "get", "-r", "100000", "-P", "16"], False),
            ]
        print(f"{'scenario':<28} {'slotgate rps':>13} {'direct rps':>11} {'ratio':>6} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'d.p50':>6} {'d.p99':>6} {'cpu us/req':>10}")
        med = statistics.median
        budgets = []
        counted = False
        for name, args, direct_ok in scenarios:
            count = n * 5 if "P16" in name else n
            runs, directs, ratios = [], [], []
            via_policy = policy_proxy is not None and name.endswith(str(opts.read_from))
            port, pid = (policy_port, policy_proxy.pid) if via_policy else (proxy_port, proxy.pid)
            if via_policy and not counted:
                # From here on only the policy's slotgate sends GETs: count where they land.
                for p in ports:
                    sh("redis-cli", "-p", str(p), "config", "resetstat")
                counted = True
            for _ in range(max(1, opts.repeat)):
                runs.append(bench(port, args, n=count, pids=[[pid], redis_pids]))
                if direct_ok == "owner":
                    directs.append(bench(owner, args, n=count, pids=[redis_pids]))
                elif direct_ok:
                    directs.append(bench(base, args, cluster=True, n=count, pids=[redis_pids]))
                if directs:
                    ratios.append(runs[-1]["rps"] / directs[-1]["rps"])
            keys = ("rps", "p50", "p99", "bench_us", "busy")
            r = {k: med(x[k] for x in runs) for k in keys}
            r["proxy_us"] = med(x["pids_us"][0] for x in runs)
            r["redis_us"] = med(x["pids_us"][1] for x in runs)
            r["proxy_wait"] = med(x["waits"][0] for x in runs)
            d = None
            if directs:
                d = {k: med(x[k] for x in directs) for k in keys}
                d["redis_us"] = med(x["pids_us"][0] for x in directs)
            ratio = f"{med(ratios):.2f}" if ratios else "-"
            print(f"{name:<28} {r['rps']:>13.0f} {(d['rps'] if d else 0):>11.0f} {ratio:>6} "
                  f"{r['p50']:>7.3f} {r['p99']:>7.3f} {(d['p50'] if d else 0):>6.3f} "
                  f"{(d['p99'] if d else 0):>6.3f} {r['proxy_us']:>10.2f}", flush=True)
            budgets.append((name, r, d))
        # Where the machine's CPU went per request. When both runs keep every CPU busy, their
        # throughputs stand in the inverse ratio of these totals: "cpu bound" is the ratio the
        # proxy could reach at best on this machine with its CPU cost as measured.
        # "waited" is the share of the run slotgate was ready to run but had no CPU (schedstat),
        # summed over its threads (so above 100% is possible with several workers).
        print("\nCPU per request (us; utime+stime), share of all CPUs busy, share of the run "
              "slotgate waited for a CPU; slotgate | direct")
        print(f"{'scenario':<28} {'bench':>6} {'redis':>6} {'proxy':>6} {'total':>6} {'busy':>5}"
              f" {'waited':>6} | {'bench':>6} {'redis':>6} {'total':>6} {'busy':>5} | {'cpu bound':>9}")
        for name, r, d in budgets:
            via = r["bench_us"] + r["redis_us"] + r["proxy_us"]
            line = (f"{name:<28} {r['bench_us']:>6.2f} {r['redis_us']:>6.2f} {r['proxy_us']:>6.2f}"
                    f" {via:>6.2f} {r['busy']:>5.0%} {r['proxy_wait']:>6.0%}")
            if d:
                direct = d["bench_us"] + d["redis_us"]
                line += (f" | {d['bench_us']:>6.2f} {d['redis_us']:>6.2f} {direct:>6.2f}"
                         f" {d['busy']:>5.0%} | {direct / via:>9.2f}")
            print(line)
        if policy_proxy:
            # Every GET scenario ran since the reset: the direct cluster runs read masters, the
            # master-only slotgate masters, the policy's slotgate where its policy placed them.
            print(f"\nGETs each node served in the {opts.read_from} runs (INFO commandstats):")
            for p in ports:
                role = "master" if "role:master" in sh("redis-cli", "-p", str(p), "info", "replication") else "replica"
                stats = sh("redis-cli", "-p", str(p), "info", "commandstats")
                calls = next((l.split("calls=")[1].split(",")[0] for l in stats.splitlines()
                              if l.startswith("cmdstat_get:")), "0")
                print(f"  127.0.0.1:{p} {role:<8} {calls:>10}")
            info = sh("redis-cli", "-p", str(policy_port), "info", "proxy")
            print("  " + ", ".join(l.strip() for l in info.splitlines() if l.startswith("proxy_reads_")))
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
