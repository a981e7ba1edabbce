#!/usr/bin/env python3
"""Checks that the deploy kit hands the engine its secrets from a secret.

- Kubernetes: the identity key reaches the engine as a file mounted from the
  Secret (`ONEJOURNEY__IDENTITY__KEY_FILE` pointing into a secret volume that
  holds the Secret's `identity-key`); the bearer token and the SASL password
  come from `secretKeyRef`s; no secret is a plain `value`.
- Compose: the engine reads the identity key from a compose secret file.
"""

import os
import sys

import yaml

os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
SECRET_ENV = {"ONEJOURNEY__IDENTITY__KEY", "ONEJOURNEY__HTTP__BEARER_TOKEN", "ONEJOURNEY__KAFKA__SASL_PASSWORD"}


def fail(msg):
    sys.exit(f"deploy secrets: {msg}")


with open("deploy/kubernetes/onejourney.yaml") as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
secret = next(d for d in docs if d["kind"] == "Secret")
if "identity-key" not in secret.get("stringData", {}):
    fail("the Kubernetes Secret has no identity-key")
sts = next(d for d in docs if d["kind"] == "StatefulSet")
pod = sts["spec"]["template"]["spec"]
engine = next(c for c in pod["containers"] if c["name"] == "onejourney")
env = {e["name"]: e for e in engine.get("env", [])}
for name in SECRET_ENV:
    if name in env and "value" in env[name]:
        fail(f"{name} is a plain value in the StatefulSet")
for name in ("ONEJOURNEY__HTTP__BEARER_TOKEN", "ONEJOURNEY__KAFKA__SASL_PASSWORD"):
    if "secretKeyRef" not in env.get(name, {}).get("valueFrom", {}):
        fail(f"{name} does not come from the Secret")
key_file = env.get("ONEJOURNEY__IDENTITY__KEY_FILE", {}).get("value", "")
mounts = [m for m in engine.get("volumeMounts", []) if key_file.startswith(m["mountPath"].rstrip("/") + "/")]
if not mounts:
    fail(f"identity.key_file {key_file!r} is on no volume mount")
volume = next((v for v in pod["volumes"] if v["name"] == mounts[0]["name"]), {})
items = volume.get("secret", {})
if items.get("secretName") != secret["metadata"]["name"]:
    fail("the identity key's volume is not the Secret")
paths = {i["key"]: i["path"] for i in items.get("items", [])}
if key_file != mounts[0]["mountPath"].rstrip("/") + "/" + paths.get("identity-key", ""):
    fail(f"identity.key_file {key_file!r} is not the Secret's identity-key")

with open("deploy/compose/docker-compose.yml") as f:
    compose = yaml.safe_load(f)
svc = compose["services"]["engine"]
if svc.get("environment", {}).get("ONEJOURNEY__IDENTITY__KEY_FILE") != "/run/secrets/identity_key":
    fail("the compose engine does not read /run/secrets/identity_key")
if "identity_key" not in svc.get("secrets", []) or "file" not in compose.get("secrets", {}).get("identity_key", {}):
    fail("the compose engine has no identity_key secret")
print("deploy secrets: ok")
