#!/usr/bin/env python3
"""Checks that the deploy kit names the versions the workspace really has.

- The workspace's `rust-version` is at least every locked dependency's
  `rust-version` (as `cargo metadata --locked` reports it), so the declared
  minimum toolchain builds Cargo.lock as it is.
- The Dockerfile builds with exactly that Rust version.
- The image tag in compose and Kubernetes is the workspace's version.
"""

import json
import os
import re
import subprocess
import sys

os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
meta = json.loads(
    subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
)


def parse(v):
    parts = [int(x) for x in v.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def show(t):
    return ".".join(map(str, t))


members = set(meta["workspace_members"])
ours = [p for p in meta["packages"] if p["id"] in members]
declared = {p["rust_version"] for p in ours}
versions = {p["version"] for p in ours}
if len(declared) != 1 or None in declared or len(versions) != 1:
    sys.exit(f"workspace members disagree: rust-version {declared}, version {versions}")
msrv, version = declared.pop(), versions.pop()

needs, name, at = max(
    (parse(p["rust_version"]), p["name"], p["version"]) for p in meta["packages"] if p["rust_version"]
)
if parse(msrv) < needs:
    sys.exit(f"rust-version {msrv} is older than {name} {at} needs ({show(needs)})")


def expect(path, pattern, want, what):
    with open(path) as f:
        found = re.findall(pattern, f.read())
    if not found or any(x != want for x in found):
        sys.exit(f"{path}: {what} {found}, expected {want}")


expect("deploy/compose/Dockerfile", r"FROM rust:([0-9.]+)-", msrv, "Rust image")
expect("deploy/compose/docker-compose.yml", r"image: onejourney:(\S+)", version, "image tag")
expect("deploy/kubernetes/onejourney.yaml", r"image: onejourney:(\S+)", version, "image tag")
print(f"rust-version {msrv} (newest needed by a locked dependency: {name} {at}, {show(needs)}); image onejourney:{version}")
