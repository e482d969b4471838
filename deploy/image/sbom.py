#!/usr/bin/env python3
"""A CycloneDX 1.5 SBOM of the operator image: the Rust crates compiled into the binary (the
normal dependency tree of Cargo.lock for the image's target, from `cargo tree`) and the Debian
packages the image's files come from (deploy/image/rootfs.sh). Deterministic: the same inputs
give the same bytes (no random serial number; the timestamp is SOURCE_DATE_EPOCH's)."""

import argparse
import json
import re
import sys
import uuid
from datetime import datetime, timezone


def crates(path):
    """`cargo tree --format '{p}\t{l}'` lines: "name vX.Y.Z [(source)]\tlicense"."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            package, _, license_ = line.partition("\t")
            m = re.match(r"^(\S+) v(\S+)", package)
            if not m:
                raise SystemExit(f"sbom.py: cannot read cargo tree line {line!r}")
            out[(m.group(1), m.group(2))] = license_.strip()
    return out


def debs(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                name, version, arch = line.rstrip("\n").split("\t")
                out.append((name, version, arch))
    return out


def main():
    p = argparse.ArgumentParser()
    for a in ("--name", "--version", "--image", "--epoch", "--arch", "--crates", "--packages"):
        p.add_argument(a, required=True)
    args = p.parse_args()

    components = []
    for (name, version), license_ in sorted(crates(args.crates).items()):
        if name == args.name:
            continue
        c = {
            "type": "library",
            "bom-ref": f"pkg:cargo/{name}@{version}",
            "name": name,
            "version": version,
            "purl": f"pkg:cargo/{name}@{version}",
        }
        if license_:
            # cargo writes SPDX expressions, sometimes with "/" for OR (old style).
            c["licenses"] = [{"expression": license_.replace("/", " OR ")}]
        components.append(c)
    for name, version, arch in debs(args.packages):
        purl = f"pkg:deb/debian/{name}@{version}?arch={arch}&distro=debian-12"
        components.append(
            {"type": "library", "bom-ref": purl, "name": name, "version": version, "purl": purl}
        )

    timestamp = datetime.fromtimestamp(int(args.epoch), tz=timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, args.image)),
        "version": 1,
        "metadata": {
            "timestamp": timestamp,
            "component": {
                "type": "container",
                "bom-ref": args.image,
                "name": args.name,
                "version": args.version,
                "purl": f"pkg:oci/{args.name}@{args.image.split('@', 1)[1].replace(':', '%3A')}"
                f"?arch={args.arch}",
                "licenses": [{"expression": "Apache-2.0"}],
            },
        },
        "components": components,
        "dependencies": [
            {"ref": args.image, "dependsOn": [c["bom-ref"] for c in components]}
        ],
    }
    json.dump(bom, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
