"""Writes a TUF repository with python-tuf's own metadata API (tuf.api.metadata), the way a
third party would: ed25519 keys from securesystemslib's CryptoSigner, consistent snapshots,
several targets carrying `custom`, and a root rotation (version 2 hands the root role to a new
key, signed by the old and the new one).

usage: make_repo.py OUT_DIR TARGETS_JSON
TARGETS_JSON maps each target path to {"length", "sha256", "custom"}: the targets to sign.
Writes the metadata files into OUT_DIR, laid out as a client fetches them.
"""

import json
import sys
from datetime import datetime, timedelta, timezone

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer


def expires(days):
    return datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=days)


def write(md, out, name):
    md.to_file(f"{out}/{name}", JSONSerializer(compact=False))


def main(out, targets_file):
    with open(targets_file, encoding="utf-8") as f:
        wanted = json.load(f)
    signers = {role: CryptoSigner.generate_ed25519() for role in ("root", "timestamp", "snapshot", "targets")}

    root = Root(expires=expires(365), consistent_snapshot=True)
    for role, signer in signers.items():
        root.add_key(signer.public_key, role)
    root_md = Metadata(root)
    root_md.sign(signers["root"])
    write(root_md, out, "1.root.json")

    targets = Targets(expires=expires(90))
    for path, t in wanted.items():
        targets.targets[path] = TargetFile(
            length=t["length"],
            hashes={"sha256": t["sha256"]},
            path=path,
            unrecognized_fields={"custom": t["custom"]},
        )
    targets_md = Metadata(targets)
    targets_md.sign(signers["targets"])
    write(targets_md, out, "1.targets.json")

    snapshot_md = Metadata(Snapshot(expires=expires(7), meta={"targets.json": MetaFile(version=1)}))
    snapshot_md.sign(signers["snapshot"])
    write(snapshot_md, out, "1.snapshot.json")

    timestamp_md = Metadata(Timestamp(expires=expires(1), snapshot_meta=MetaFile(version=1)))
    timestamp_md.sign(signers["timestamp"])
    write(timestamp_md, out, "timestamp.json")

    # Rotation: version 2 of root moves the root role to a new key, signed by both.
    new_root = CryptoSigner.generate_ed25519()
    root.version = 2
    root.revoke_key(signers["root"].public_key.keyid, "root")
    root.add_key(new_root.public_key, "root")
    rotated = Metadata(root)
    rotated.sign(signers["root"], append=True)
    rotated.sign(new_root, append=True)
    write(rotated, out, "2.root.json")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
