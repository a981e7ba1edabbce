#!/usr/bin/env python3
"""Checks that every launcher of the engine sets mimalloc's purge delay to
-1 (keep freed memory for reuse; docs/benchmarks.md, session 36): the
Makefile (make bench, the engine processes of the end-to-end tests), the
Dockerfile (compose) and the Kubernetes StatefulSet. mimalloc reads it
before main starts, so the engine cannot set it itself
(services/engine/src/allocator.rs).
"""

import os
import re
import sys

import yaml

os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
VAR, VALUE = "MIMALLOC_PURGE_DELAY", "-1"


def fail(msg):
    sys.exit(f"deploy allocator: {msg}")


with open("Makefile") as f:
    make = f.read()
if not re.search(rf"^{VAR} \?= {re.escape(VALUE)}$", make, re.M) or not re.search(rf"^export {VAR}$", make, re.M):
    fail(f"the Makefile does not export {VAR} ?= {VALUE}")

with open("deploy/compose/Dockerfile") as f:
    docker = f.read()
runtime = docker.split("\nFROM ")[-1]
if not re.search(rf"^ENV {VAR}={re.escape(VALUE)}$", runtime, re.M):
    fail(f"the Dockerfile's runtime stage does not set ENV {VAR}={VALUE}")

with open("deploy/kubernetes/onejourney.yaml") as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
sts = next((d for d in docs if d.get("kind") == "StatefulSet"), None)
if sts is None:
    fail("the Kubernetes manifest has no StatefulSet")
containers = sts.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
engine = next((c for c in containers if c.get("name") == "onejourney"), None)
if engine is None:
    fail("the StatefulSet has no onejourney container")
env = {e.get("name"): e.get("value") for e in engine.get("env", [])}
if env.get(VAR) != VALUE:
    fail(f"the StatefulSet sets {VAR} to {env.get(VAR)!r}, not {VALUE!r}")
print("deploy allocator: ok")
