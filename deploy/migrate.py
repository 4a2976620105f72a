#!/usr/bin/env python3
"""Moves the clients of one Redis server to a Redis Cluster through slotgate, with no client
change and no client error.

Before: the application talks to slotgate in standalone mode (`server = "old:6379"`), with an
admin listener and `admin.token`. The new cluster runs and is empty (or holds an older copy).

What it does:
 1. records every key written on the old server from now on (keyspace notifications, `KA`,
    on a connection of its own; the server's own setting is put back at the end);
 2. copies the data into the cluster: `redis-cli --cluster import --cluster-copy
    --cluster-replace` (the old server keeps its keys);
 3. copies again the keys written meanwhile (DUMP on the old server, RESTORE ... REPLACE with
    their TTL on the cluster; a key gone from the old server is deleted from the cluster),
    until few are left;
 4. pauses slotgate's clients (`POST /pause`): it takes no more requests (they wait in the
    clients' sockets) and answers once the old server has run everything it was sent; a
    PUBLISH on the old server then marks the end of its notifications, and the last written
    keys are copied;
 5. installs the new config file (`--new-config`, cluster mode, with key families if any: their
    keys were copied under their stored names) over the one slotgate reads
    and reloads it (`POST /reload`), waits until slotgate's topology shows the cluster's
    masters, and resumes the clients (`POST /resume`): what waited, and everything after, is
    read and sent to the cluster.

If anything fails before the reload, slotgate is resumed (`POST /resume`) and keeps serving
from the old server, which still holds every write; the cluster's copy is stale from then on,
so the script refuses a cluster that holds keys unless told to empty it (`--flush-cluster`).
The pause lasts as long as step 4's copy and the reload, and ends by itself after `--pause-ms`
(10 s) if the script dies.

Only Python's standard library is used. Database 0 only (a cluster has no other).
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request


class RedisError(Exception):
    pass


class Conn:
    """A RESP2 connection: commands in, replies out (errors raised as RedisError)."""

    def __init__(self, addr, user=None, password=None, timeout=30.0):
        host, port = addr.rsplit(":", 1)
        self.addr = addr
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.rd = self.sock.makefile("rb")
        if password:
            args = ["AUTH", user, password] if user else ["AUTH", password]
            self.call(*args)

    def send(self, *cmds):
        out = bytearray()
        for cmd in cmds:
            out += b"*%d\r\n" % len(cmd)
            for a in cmd:
                a = a if isinstance(a, bytes) else str(a).encode()
                out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)

    def read(self, raise_errors=True):
        line = self.rd.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError(f"{self.addr} closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            err = RedisError(rest.decode(errors="replace"))
            if raise_errors:
                raise err
            return err
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.rd.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read(raise_errors) for _ in range(n)]
        raise ConnectionError(f"{self.addr} sent {line!r}")

    def call(self, *args):
        self.send(args)
        return self.read()

    def pipeline(self, cmds):
        """Replies of `cmds` in order; errors are returned, not raised."""
        if not cmds:
            return []
        self.send(*cmds)
        return [self.read(raise_errors=False) for _ in cmds]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def key_slot(key):
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return crc16(key) % 16384


class Families:
    """The families slotgate reads from a config file: which family holds a key, first match."""

    def __init__(self, described):
        self.families = []
        for f in described:
            regexes = [re.compile(b"".join(
                b".*" if c == ord("*") else b"." if c == ord("?") else re.escape(bytes([c]))
                for c in k.encode()) + b"\\Z", re.S) for k in f["keys"]]
            self.families.append((f["name"].encode(), regexes))

    @staticmethod
    def of(slotgate, config):
        """The families of a config file, as slotgate reads them (`slotgate --families`)."""
        out = subprocess.run([slotgate, "--families", config], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"{slotgate} --families {config}: {out.stderr.strip()}")
        return Families(json.loads(out.stdout)["families"])

    def family_of(self, key):
        for name, regexes in self.families:
            if any(r.match(key) for r in regexes):
                return name
        return None

    def stored(self, key):
        """The stored name of a family key; None for a key in no family or a stored name."""
        if self.restore(key) is not None:
            return None
        name = self.family_of(key)
        return None if name is None else b"{" + name + b"}" + key

    def restore(self, key):
        for name, _ in self.families:
            tag = b"{" + name + b"}"
            if key.startswith(tag) and self.family_of(key[len(tag):]) == name:
                return key[len(tag):]
        return None


class ClusterMap:
    """Which cluster master owns each slot (CLUSTER SLOTS), with a connection to each."""

    def __init__(self, seed, user, password):
        self.user, self.password = user, password
        c = Conn(seed, user, password)
        self.owner = [None] * 16384
        for entry in c.call("CLUSTER", "SLOTS"):
            start, end, master = entry[0], entry[1], entry[2]
            addr = f"{master[0].decode()}:{master[1]}"
            for s in range(start, end + 1):
                self.owner[s] = addr
        c.close()
        missing = sum(1 for o in self.owner if o is None)
        if missing:
            raise SystemExit(f"the cluster does not serve {missing} slots: fix it first")
        self.masters = sorted(set(self.owner))
        self.conns = {}

    def conn(self, addr):
        if addr not in self.conns:
            self.conns[addr] = Conn(addr, self.user, self.password)
        return self.conns[addr]


class Watcher(threading.Thread):
    """Collects the keys a server reports as written (keyspace notifications), and sees the
    fence: the end of what was written before it."""

    def __init__(self, conn, fence):
        super().__init__(daemon=True)
        self.conn, self.fence = conn, fence.encode()
        self.lock = threading.Lock()
        self.dirty = set()
        self.fenced = threading.Event()
        self.failed = None
        self.prefix = b"__keyspace@0__:"
        conn.send(("PSUBSCRIBE", self.prefix + b"*"), ("SUBSCRIBE", self.fence))
        for _ in range(2):
            conn.read()

    def run(self):
        try:
            self.conn.sock.settimeout(None)
            while True:
                msg = self.conn.read()
                if msg[0] == b"pmessage":
                    key = msg[2][len(self.prefix) :]
                    with self.lock:
                        self.dirty.add(key)
                elif msg[0] == b"message" and msg[1] == self.fence:
                    self.fenced.set()
        except (OSError, ConnectionError, ValueError) as e:
            self.failed = e
            self.fenced.set()

    def take(self):
        with self.lock:
            keys, self.dirty = self.dirty, set()
        return keys


class KeyWatch:
    """The keys written on `servers` (address -> a function opening a connection to it) from
    now on: keyspace notifications (`KA`) turned on on each (their setting put back by
    `close`), and a `Watcher` per server."""

    def __init__(self, servers, fence):
        self.fence = fence
        self.conns, self.notify, self.watchers = {}, {}, {}
        for addr, connect in servers.items():
            c = self.conns[addr] = connect()
            self.notify[addr] = c.call("CONFIG", "GET", "notify-keyspace-events")[1].decode()
            flags = "".join(sorted(set(self.notify[addr]) | set("KA")))
            c.call("CONFIG", "SET", "notify-keyspace-events", flags)
            self.watchers[addr] = Watcher(connect(), fence)
            self.watchers[addr].start()

    def take(self):
        """The keys written since the last call."""
        keys = set()
        for addr, w in self.watchers.items():
            if w.failed:
                raise SystemExit(f"the keyspace watch of {addr} failed: {w.failed}")
            keys |= w.take()
        return keys

    def fenced(self):
        """Marks the end of every server's notifications, and waits until each was seen: what
        `take` returns from then on holds every write made before."""
        for c in self.conns.values():
            c.call("PUBLISH", self.fence, "end")
        for addr, w in self.watchers.items():
            if not w.fenced.wait(5) or w.failed:
                raise SystemExit(f"the keyspace watch of {addr} did not see the fence: {w.failed}")

    def close(self):
        for addr, flags in self.notify.items():
            try:
                self.conns[addr].call("CONFIG", "SET", "notify-keyspace-events", flags)
            except (OSError, ConnectionError, RedisError) as e:
                log(f"could not put notify-keyspace-events back on {addr}: {e}")


def transfer(keys, source, target, cluster, drop_copy=False, batch=500):
    """Copies `keys` to the cluster under the names `target(key)` gives (DUMP where
    `source(key)`, a connection, holds it; RESTORE ... REPLACE with its TTL on the master of the
    target's slot; a key gone there is deleted): how many. With `drop_copy`, a copy under the
    key's own name on the cluster (the import's) is deleted when the target is another name."""
    keys = list(keys)
    for i in range(0, len(keys), batch):
        by_source = {}
        for k in keys[i : i + batch]:
            conn = source(k)
            by_source.setdefault(id(conn), (conn, []))[1].append(k)
        writes = {}
        for conn, ks in by_source.values():
            replies = conn.pipeline([c for k in ks for c in (("DUMP", k), ("PTTL", k))])
            for j, k in enumerate(ks):
                dump, pttl = replies[2 * j], replies[2 * j + 1]
                for r in (dump, pttl):
                    if isinstance(r, RedisError):
                        raise SystemExit(f"reading {k!r} from {conn.addr}: {r}")
                name = target(k)
                cmd = ("DEL", name) if dump is None or pttl == -2 else \
                    ("RESTORE", name, max(pttl, 0), dump, "REPLACE")
                writes.setdefault(cluster.owner[key_slot(name)], []).append(cmd)
                if drop_copy and name != k:
                    writes.setdefault(cluster.owner[key_slot(k)], []).append(("DEL", k))
        for addr, cmds in writes.items():
            for cmd, r in zip(cmds, cluster.conn(addr).pipeline(cmds)):
                if isinstance(r, RedisError):
                    raise SystemExit(f"writing {cmd[1]!r} to {addr}: {r}")
    return len(keys)


def copy_until_settled(take, copy, settle, what):
    """Copies the keys written meanwhile (`take`) with `copy`, round after round, until at most
    `settle` were left in one (20 rounds at most): every key taken."""
    taken = set()
    for round_ in range(20):
        keys = take()
        taken |= keys
        copy(keys)
        log(f"round {round_ + 1}: copied {len(keys)} {what} written during the copy")
        if len(keys) <= settle:
            break
    return taken


def scan(conn):
    """Every key of database 0 of `conn`'s server."""
    cursor, keys = b"0", []
    while True:
        cursor, found = conn.call("SCAN", cursor, "COUNT", 1000)
        keys.extend(found)
        if cursor == b"0":
            return keys


class Admin:
    def __init__(self, url, token):
        self.url, self.token = url.rstrip("/"), token

    def request(self, method, path, timeout=30):
        req = urllib.request.Request(self.url + path, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def pause(self, ms):
        """Pauses slotgate's clients for at most `ms`: the masters it answered for, and the
        pause's limit in seconds."""
        status, body = self.request("POST", f"/pause?ms={ms}")
        if status != 200:
            raise SystemExit(f"slotgate did not pause ({status}): {body.strip()}")
        reply = json.loads(body)
        return reply["paused"], reply["ms"] / 1000.0

    def masters(self):
        status, body = self.request("GET", "/topology")
        if status != 200:
            return None
        return sorted(s["master"]["node"] for s in json.loads(body)["shards"])


START = time.monotonic()


def log(msg):
    print(f"migrate: {time.monotonic() - START:7.3f}s {msg}", flush=True)


def install(new_config, config):
    """Replaces `config` by a copy of `new_config` in one rename."""
    directory = os.path.dirname(os.path.abspath(config))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".slotgate-migrate-")
    os.close(fd)
    shutil.copyfile(new_config, tmp)
    os.chmod(tmp, os.stat(config).st_mode & 0o7777)
    os.replace(tmp, config)


def roll_back(admin, config, before, installed, paused, where):
    """After a failure: the old config file back and read again (when the new one was put in
    place), and the clients resumed (when paused), on `where`."""
    if installed:
        with open(config, "wb") as f:
            f.write(before)
        status, body = admin.request("POST", "/reload")
        log(f"the old config file put back and reloaded ({status}): {body.strip()}")
    if paused:
        status, body = admin.request("POST", "/resume")
        log(f"slotgate resumed {where} ({status}): {body.strip()}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="old", required=True, help="the old server, host:port")
    p.add_argument("--from-user")
    p.add_argument("--from-password", default=os.environ.get("MIGRATE_FROM_PASSWORD"))
    p.add_argument("--to", required=True, help="any node of the new cluster, host:port")
    p.add_argument("--to-user")
    p.add_argument("--to-password", default=os.environ.get("MIGRATE_TO_PASSWORD"))
    p.add_argument("--admin", required=True, help="slotgate's admin URL, http://host:port")
    p.add_argument("--token", default=os.environ.get("SLOTGATE_ADMIN_TOKEN"))
    p.add_argument("--config", required=True, help="the config file slotgate reads")
    p.add_argument("--new-config", required=True, help="the same, in cluster mode")
    p.add_argument("--flush-cluster", action="store_true",
                   help="empty the cluster first (FLUSHALL on every master): after an attempt that failed")
    p.add_argument("--pause-ms", type=int, default=10000, help="the pause's upper bound")
    p.add_argument("--settle", type=int, default=100, help="dirty keys left to pause at")
    p.add_argument("--slotgate", default="slotgate",
                   help="the slotgate binary, which reads --new-config's key families")
    a = p.parse_args()
    if not a.token:
        raise SystemExit("--token (or SLOTGATE_ADMIN_TOKEN) is needed: slotgate's admin.token")

    # The new config is checked first (as slotgate reads it); its key families' keys go to the
    # cluster under their stored names.
    families = Families.of(a.slotgate, a.new_config)
    if not families.families:
        families = None
    old = Conn(a.old, a.from_user, a.from_password)
    keyspace = old.call("INFO", "keyspace").decode()
    others = [l.split(":")[0] for l in keyspace.splitlines() if l.startswith("db") and not l.startswith("db0:")]
    if others:
        raise SystemExit(f"the old server has keys in {others}: a cluster has database 0 only")
    cluster = ClusterMap(a.to, a.to_user, a.to_password)
    held = {m: cluster.conn(m).call("DBSIZE") for m in cluster.masters}
    if sum(held.values()):
        if not a.flush_cluster:
            raise SystemExit(f"the cluster holds {sum(held.values())} keys (an earlier attempt?): "
                             "a key deleted since would stay; empty it with --flush-cluster")
        for m in cluster.masters:
            cluster.conn(m).call("FLUSHALL")
        log(f"emptied the cluster ({sum(held.values())} keys)")
    admin = Admin(a.admin, a.token)
    if admin.masters() != [a.old]:
        log(f"note: slotgate's masters are {admin.masters()}, not [{a.old}]")

    fence = f"slotgate-migrate-fence-{os.getpid()}-{time.time_ns()}"
    watch = KeyWatch({a.old: lambda: Conn(a.old, a.from_user, a.from_password)}, fence)

    def copy_keys(keys):
        # A family key to its stored name, the import's copy under its own name deleted.
        def target(k):
            return (families.stored(k) if families else None) or k
        return transfer(keys, lambda _: old, target, cluster, drop_copy=True)

    with open(a.config, "rb") as f:
        before = f.read()
    paused = installed = False
    try:
        log(f"importing {a.old} into the cluster at {a.to} (redis-cli --cluster import)")
        cmd = ["redis-cli", "--cluster", "import", a.to, "--cluster-from", a.old,
               "--cluster-copy", "--cluster-replace"]
        if a.to_user:
            cmd += ["--user", a.to_user]
        if a.from_user:
            cmd += ["--cluster-from-user", a.from_user]
        if a.from_password:
            cmd += ["--cluster-from-pass", a.from_password]
        env = dict(os.environ)
        if a.to_password:
            env["REDISCLI_AUTH"] = a.to_password
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode != 0 or "[ERR]" in out.stdout:
            raise SystemExit(f"redis-cli --cluster import failed:\n{out.stdout}{out.stderr}")
        if families:
            # The import copied every key under its own name: the families' go to theirs.
            found = [k for k in scan(old) if families.stored(k) is not None]
            log(f"moved {copy_keys(found)} keys into their families")
        copy_until_settled(watch.take, copy_keys, a.settle, "keys")

        started = time.monotonic()
        masters, limit = admin.pause(a.pause_ms)
        paused = True
        log(f"slotgate paused {masters} for at most {limit:.1f} s")
        watch.fenced()
        last = copy_keys(watch.take())
        if time.monotonic() - started > limit * 0.5:
            raise SystemExit("the last copy took more than half the pause: try again when the load is lower")
        install(a.new_config, a.config)
        installed = True
        status, body = admin.request("POST", "/reload")
        if status != 200:
            raise SystemExit(f"slotgate did not reload ({status}): {body.strip()}")
        # Before the pause's own limit: the old server must not get requests meanwhile.
        deadline = started + limit * 0.8
        while admin.masters() != cluster.masters:
            if time.monotonic() > deadline:
                raise SystemExit(f"slotgate still routes to {admin.masters()}")
            time.sleep(0.01)
        status, body = admin.request("POST", "/resume")
        paused = False
        if status != 200:
            log(f"slotgate did not resume ({status}): {body.strip()}; its pause ends by its limit")
        log(f"switched: {last} keys copied while paused, requests held "
            f"{(time.monotonic() - started) * 1000:.0f} ms; slotgate routes to {cluster.masters}")
    except BaseException:
        roll_back(admin, a.config, before, installed, paused, "on the old server")
        raise
    finally:
        watch.close()
    log(f"done: the old server {a.old} keeps its data; nothing is sent to it any more")


if __name__ == "__main__":
    main()
