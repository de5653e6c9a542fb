#!/usr/bin/env python3
"""Writes an SPDX 2.3 JSON SBOM of warden's resolved dependency graph for one target.

Every package reachable from warden through normal and build dependencies (not dev
dependencies: they are not in the shipped binary) for the target platform, with its version,
purl, download location, declared licence (from the crate's metadata) and the SHA-256 that
Cargo.lock pins; one DEPENDS_ON relationship per dependency edge.

Input: `cargo tree` for the graph (features resolved as the build resolves them), `cargo
metadata --format-version 1 --locked --filter-platform TARGET` for each package's metadata and
Cargo.lock for the checksums.
Deterministic: the same Cargo.lock, version and SOURCE_DATE_EPOCH give the same file.

Usage: sbom.py [--target TRIPLE] [--out FILE]   (stdlib only; Python >= 3.11 for tomllib)
"""

import argparse
import datetime
import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

CRATES_IO = "registry+https://github.com/rust-lang/crates.io-index"


def fail(msg, hint):
    print(f"sbom: error: {msg}\n  help: {hint}", file=sys.stderr)
    sys.exit(1)


def run(cmd, cwd):
    try:
        return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout
    except FileNotFoundError:
        fail(f"{cmd[0]} not found", "install the Rust toolchain (cargo, rustc)")
    except subprocess.CalledProcessError as e:
        fail(f"{' '.join(cmd)} failed:\n{e.stderr.strip()}",
             "run it by hand; with --locked, Cargo.lock must be up to date")


def host_triple(root):
    for line in run(["rustc", "-vV"], root).splitlines():
        if line.startswith("host: "):
            return line.split(": ", 1)[1]
    fail("rustc -vV printed no host triple", "pass --target TRIPLE")


def created(root):
    """SOURCE_DATE_EPOCH, else the last commit's date: the SBOM describes a commit."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        try:
            epoch = subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=root, check=True,
                                   capture_output=True, text=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            fail("no SOURCE_DATE_EPOCH and no git history",
                 "set SOURCE_DATE_EPOCH to the release's time (seconds since the epoch)")
    t = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def spdx_license(expr):
    """Cargo's metadata may use the deprecated '/' for OR; SPDX wants the operator."""
    if not expr:
        return "NOASSERTION"
    return re.sub(r"\s*/\s*", " OR ", expr.strip())


def download_location(pkg):
    src = pkg.get("source") or ""
    if src == CRATES_IO:
        return f"https://crates.io/api/v1/crates/{pkg['name']}/{pkg['version']}/download"
    if src.startswith("git+"):
        return src
    return "NOASSERTION"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", help="target triple (default: the host's)")
    ap.add_argument("--out", default="-", help="output file (default: stdout)")
    args = ap.parse_args()

    root = Path(__file__).resolve().parent.parent
    target = args.target or host_triple(root)
    meta = json.loads(run(["cargo", "metadata", "--format-version", "1", "--locked",
                           "--filter-platform", target], root))
    lock_bytes = (root / "Cargo.lock").read_bytes()
    lock = tomllib.loads(lock_bytes.decode())
    checksums = {(p["name"], p["version"], p.get("source")): p.get("checksum")
                 for p in lock.get("package", [])}

    pkgs = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    root_id = meta["resolve"]["root"]
    if root_id is None:
        fail("cargo metadata names no root package", "run from warden's source tree")

    # The graph as built: `cargo tree` resolves features the way the build does (resolver 2+:
    # dev-dependencies' features are not unified in), where `cargo metadata`'s resolve would add
    # crates only the tests enable. Edge kinds still come from the metadata.
    tree = run(["cargo", "tree", "--locked", "-e", "normal,build", "--target", target,
                "--prefix", "depth", "--format", "{p}"], root)
    by_name_version = {}
    for pid, p in pkgs.items():
        by_name_version.setdefault((p["name"], p["version"]), []).append(pid)
    edges, seen, stack = {}, set(), []
    for line in tree.splitlines():
        m = re.match(r"^(\d+)(\S+) v(\S+)(.*)$", line)
        if not m:
            continue
        depth, name, version, rest = int(m[1]), m[2], m[3], m[4]
        ids = by_name_version.get((name, version), [])
        if len(ids) > 1:
            # The same name and version from two sources: cargo tree names the source of any
            # but crates.io.
            named = re.sub(r"\((proc-macro|\*)\)", "", rest).strip()
            ids = [i for i in ids if (pkgs[i].get("source") == CRATES_IO) == (not named)]
        if len(ids) != 1:
            fail(f"cannot match {name} {version} from cargo tree to cargo metadata",
                 "report this with the output of cargo tree")
        pid = ids[0]
        del stack[depth:]
        if depth:
            parent = stack[depth - 1]
            kinds = {k["kind"] for d in nodes[parent]["deps"] if d["pkg"] == pid
                     for k in d["dep_kinds"]}
            edges.setdefault(parent, {})[pid] = "build" if kinds == {"build"} else "normal"
        stack.append(pid)
        seen.add(pid)
    if root_id not in seen:
        fail("cargo tree did not start at warden", "run from warden's source tree")

    spdx_ids, used = {}, set()
    for pid in sorted(seen, key=lambda i: (pkgs[i]["name"], pkgs[i]["version"], i)):
        p = pkgs[pid]
        base = "SPDXRef-Package-" + re.sub(r"[^A-Za-z0-9.-]", "-", f"{p['name']}-{p['version']}")
        sid, n = base, 2
        while sid in used:
            sid, n = f"{base}-{n}", n + 1
        used.add(sid)
        spdx_ids[pid] = sid

    root_pkg = pkgs[root_id]
    packages = []
    for pid, sid in spdx_ids.items():
        p = pkgs[pid]
        entry = {
            "SPDXID": sid,
            "name": p["name"],
            "versionInfo": p["version"],
            "downloadLocation": download_location(p),
            "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": spdx_license(p.get("license")),
            "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": "APPLICATION" if pid == root_id else "LIBRARY",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": f"pkg:cargo/{p['name']}@{p['version']}",
            }],
        }
        if p.get("description"):
            entry["summary"] = " ".join(p["description"].split())
        if not p.get("license") and p.get("license_file"):
            entry["licenseComments"] = "The crate gives its licence only as a file: " \
                + os.path.basename(p["license_file"])
        checksum = checksums.get((p["name"], p["version"], p.get("source")))
        if checksum:
            entry["checksums"] = [{"algorithm": "SHA256", "checksumValue": checksum}]
        elif p.get("source"):
            fail(f"Cargo.lock has no checksum for {p['name']} {p['version']}",
                 "regenerate Cargo.lock with a current cargo")
        packages.append(entry)

    relationships = [{
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": spdx_ids[root_id],
    }]
    for src in sorted(edges, key=spdx_ids.get):
        for dst in sorted(edges[src], key=spdx_ids.get):
            rel = {
                "spdxElementId": spdx_ids[src],
                "relationshipType": "DEPENDS_ON",
                "relatedSpdxElement": spdx_ids[dst],
            }
            if edges[src][dst] == "build":
                rel["comment"] = "build dependency: used by a build script, not linked in"
            relationships.append(rel)

    name = f"{root_pkg['name']}-{root_pkg['version']}"
    # Unique per release and reproducible: derived from the version and the lock file.
    digest = hashlib.sha256(lock_bytes + target.encode()).hexdigest()[:32]
    doc = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": f"https://spdx.org/spdxdocs/{name}-{target}-{digest}",
        "creationInfo": {
            "created": created(root),
            "creators": ["Tool: warden-packaging-sbom.py"],
            "comment": f"Resolved dependency graph of {name} for {target}, from "
                       "cargo metadata and Cargo.lock; dev-dependencies excluded.",
        },
        "packages": packages,
        "relationships": relationships,
    }
    text = json.dumps(doc, indent=2, sort_keys=False) + "\n"
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
        print(f"sbom: {len(packages)} packages, {len(relationships) - 1} dependency edges "
              f"-> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
