#!/usr/bin/env python3
"""Moves a live cluster's existing keys into their key families, through slotgate, with no
client change and no client error.

Before: the application runs through slotgate in front of the cluster, without `[[colocate]]`,
with an admin listener and `admin.token`. `--new-config` is the same config file with the
families added. Keys of a family are then stored under its tag (`rq:job:1` as `{rq}rq:job:1`);
the ones the application already has must move there when slotgate starts using the family.

What it does:
 1. asks slotgate which keys each family holds (`slotgate --families NEW-CONFIG`);
 2. records every key written on the cluster's masters from now on (keyspace notifications,
    `KA`, on a connection of its own to each; each master's setting is put back at the end);
 3. copies every family key it finds (SCAN on each master) to its stored name (DUMP, then
    RESTORE ... REPLACE with its TTL on the master of the stored name's slot; a key gone since
    is deleted there), then the keys written meanwhile, until few are left;
 4. pauses slotgate's clients (`POST /pause`), marks the end of each master's notifications
    with a PUBLISH, and copies the keys written last;
 5. installs the new config over the one slotgate reads and reloads it (`POST /reload`; key
    families change live while the clients are paused), then resumes the clients: every
    request from then on uses the stored names;
 6. deletes the old copies.

If a step fails before the reload, slotgate is resumed and keeps the old names, which hold
every write; the stored copies are left behind (a later run replaces them).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from migrate import (Admin, ClusterMap, Conn, Families, KeyWatch, copy_until_settled,  # noqa: E402
                     install, key_slot, roll_back, scan, transfer)

START = time.monotonic()


def log(msg):
    print(f"colocate: {time.monotonic() - START:7.3f}s {msg}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", required=True, help="any node of the cluster, host:port")
    p.add_argument("--user")
    p.add_argument("--password", default=os.environ.get("COLOCATE_PASSWORD"))
    p.add_argument("--admin", required=True, help="slotgate's admin URL, http://host:port")
    p.add_argument("--token", default=os.environ.get("SLOTGATE_ADMIN_TOKEN"))
    p.add_argument("--config", required=True, help="the config file slotgate reads")
    p.add_argument("--new-config", required=True, help="the same, with [[colocate]]")
    p.add_argument("--slotgate", default="slotgate", help="the slotgate binary")
    p.add_argument("--pause-ms", type=int, default=10000, help="the pause's upper bound")
    p.add_argument("--settle", type=int, default=100, help="written keys left to pause at")
    a = p.parse_args()
    if not a.token:
        raise SystemExit("--token (or SLOTGATE_ADMIN_TOKEN) is needed: slotgate's admin.token")
    families = Families.of(a.slotgate, a.new_config)
    if not families.families:
        raise SystemExit(f"{a.new_config} has no [[colocate]]")
    cluster = ClusterMap(a.seed, a.user, a.password)
    admin = Admin(a.admin, a.token)

    fence = f"slotgate-colocate-fence-{os.getpid()}-{time.time_ns()}"
    watch = KeyWatch({m: (lambda m=m: Conn(m, a.user, a.password)) for m in cluster.masters}, fence)
    with open(a.config, "rb") as f:
        before = f.read()
    paused = installed = False
    moved = set()

    def dirty():
        return {k for k in watch.take() if families.stored(k) is not None}

    def copy(keys):
        # Read where the key is now; its old copy stays until slotgate no longer uses it.
        owner = lambda k: cluster.conn(cluster.owner[key_slot(k)])  # noqa: E731
        return transfer(keys, owner, families.stored, cluster)

    try:
        found = [k for m in cluster.masters for k in scan(cluster.conn(m))
                 if families.stored(k) is not None]
        moved |= set(found)
        log(f"copying {copy(found)} family keys to their stored names")
        moved |= copy_until_settled(dirty, copy, a.settle, "family keys")
        started = time.monotonic()
        _, limit = admin.pause(a.pause_ms)
        paused = True
        watch.fenced()
        keys = dirty()
        moved |= keys
        last = copy(keys)
        if time.monotonic() - started > limit * 0.5:
            raise SystemExit("the last copy took more than half the pause: try again when the load is lower")
        install(a.new_config, a.config)
        installed = True
        status, body = admin.request("POST", "/reload")
        if status != 200 or "key families" not in json.loads(body).get("applied", []):
            raise SystemExit(f"slotgate did not take the families ({status}): {body.strip()}")
        status, body = admin.request("POST", "/resume")
        paused = False
        log(f"families in use: {last} keys copied while paused, clients waited "
            f"{(time.monotonic() - started) * 1000:.0f} ms")
    except BaseException:
        roll_back(admin, a.config, before, installed, paused, "under the old names")
        raise
    finally:
        watch.close()
    # Nobody asks for the old names through slotgate any more.
    gone = 0
    for k in moved:
        gone += cluster.conn(cluster.owner[key_slot(k)]).call("DEL", k)
    log(f"done: {len(moved)} family keys under their stored names, {gone} old copies deleted")


if __name__ == "__main__":
    main()
