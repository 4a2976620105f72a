#!/usr/bin/env python3
"""Checks deploy/k8s without a cluster (the test command runs it): yamllint over every file;
every resource against the Kubernetes schemas of 1.30 and of the newest kubernetes-validate
knows, strictly (unknown fields refused); every kustomization's resources present; the
ServiceMonitor (a CRD, no schema) by hand; the sidecar a native one; every slotgate config in a
ConfigMap accepted by `slotgate --check-config`. A schema check, not a cluster run.
    deploy/k8s/check.py SLOTGATE_BINARY
"""
import pathlib
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parent
VERSIONS = ["1.30.0", "1.37.0"]
failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL", msg)


def docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"{' '.join(map(str, cmd))}:\n{r.stdout}{r.stderr}")


run(["yamllint", "--strict", "-c", ROOT / ".yamllint", ROOT])

files = sorted(p for p in ROOT.rglob("*.yaml"))
resources = [p for p in files if p.name != "kustomization.yaml"]
for version in VERSIONS:
    plain = [p for p in resources if docs(p)[0]["apiVersion"] != "monitoring.coreos.com/v1"]
    run(["kubernetes-validate", "--quiet", "--strict", "-k", version, *plain])

for k in (p for p in files if p.name == "kustomization.yaml"):
    spec = docs(k)[0]
    if spec.get("kind") != "Kustomization" or not spec.get("namespace"):
        fail(f"{k}: not a Kustomization with a namespace")
    for r in spec.get("resources", []):
        target = (k.parent / r).resolve()
        if not (target.is_file() or (target / "kustomization.yaml").is_file()):
            fail(f"{k}: resource {r} does not exist")
    listed = {(k.parent / r).resolve() for r in spec.get("resources", [])}
    for p in k.parent.glob("*.yaml"):
        if p.name != "kustomization.yaml" and p.resolve() not in listed:
            fail(f"{k}: {p.name} is not listed")

by_kind = {}
for p in resources:
    for d in docs(p):
        by_kind.setdefault(d["kind"], []).append((p, d))

# The ServiceMonitor selects the central Service and scrapes a port it names.
services = {d["metadata"]["name"]: d for _, d in by_kind.get("Service", [])}
for p, sm in by_kind.get("ServiceMonitor", []):
    labels = sm["spec"]["selector"]["matchLabels"]
    svc = services.get("slotgate")
    if svc is None or any(svc["metadata"]["labels"].get(k) != v for k, v in labels.items()):
        fail(f"{p}: selects no Service")
        continue
    ports = {port["name"] for port in svc["spec"]["ports"]}
    for e in sm["spec"]["endpoints"]:
        if e.get("port") not in ports or e.get("path") != "/metrics":
            fail(f"{p}: endpoint {e} is not a /metrics port of the Service")

# Every slotgate container: probes on the admin listener, read-only root, not root; the
# sidecar a native one.
for p, d in by_kind.get("Deployment", []):
    pod = d["spec"]["template"]["spec"]
    for c in pod.get("initContainers", []) + pod["containers"]:
        if c["image"] != "slotgate":
            continue
        for probe, path in (("startupProbe", "/ready"), ("readinessProbe", "/ready"), ("livenessProbe", "/health")):
            if c.get(probe, {}).get("httpGet", {}).get("path") != path:
                fail(f"{p}: {c['name']} has no {probe} on {path}")
        if not c["securityContext"].get("readOnlyRootFilesystem"):
            fail(f"{p}: {c['name']} has a writable root filesystem")
        if c in pod.get("initContainers", []) and c.get("restartPolicy") != "Always":
            fail(f"{p}: {c['name']} is an init container but not a native sidecar")
    if not pod["securityContext"].get("runAsNonRoot"):
        fail(f"{p}: may run as root")

# slotgate itself accepts the config each ConfigMap carries.
checked = 0
for p, cm in by_kind.get("ConfigMap", []):
    if cm["metadata"]["name"] != "slotgate":
        continue
    for key, text in cm.get("data", {}).items():
        if not key.endswith(".toml"):
            continue
        with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
            f.write(text)
            f.flush()
            run([sys.argv[1], "--check-config", f.name])
        checked += 1
if checked < 2:
    fail(f"{checked} slotgate configs found in the ConfigMap, not 2 (cluster and Sentinel)")

print(f"{len(resources)} manifests checked against Kubernetes {', '.join(VERSIONS)}:",
      "FAILED" if failures else "ok")
sys.exit(1 if failures else 0)
