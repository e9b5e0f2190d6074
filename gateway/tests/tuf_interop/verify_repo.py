"""Verifies a TUF repository with python-tuf's client (tuf.ngclient.Updater): refresh from the
trusted root, then each expected target's info must be found with its length, sha256 and custom.
A file-based fetcher stands in for HTTP (a missing file is a 404, which ends the root chain).

usage: verify_repo.py METADATA_DIR TRUSTED_ROOT EXPECTED_JSON
Prints "verified N targets" and exits 0, or prints python-tuf's refusal and exits 1.
"""

import json
import os
import sys
import tempfile

from tuf.api.exceptions import DownloadHTTPError
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

BASE = "http://registry.invalid/metadata/"


class DirFetcher(FetcherInterface):
    def __init__(self, root):
        self.root = root

    def _fetch(self, url):
        name = url[len(BASE):]
        path = os.path.join(self.root, name)
        if "/" in name or not os.path.isfile(path):
            raise DownloadHTTPError(f"{name}: not found", 404)
        with open(path, "rb") as f:
            yield f.read()


def main(metadata_dir, trusted_root, expected_file):
    with open(trusted_root, "rb") as f:
        bootstrap = f.read()
    with open(expected_file, encoding="utf-8") as f:
        expected = json.load(f)
    with tempfile.TemporaryDirectory() as cache:
        updater = Updater(
            metadata_dir=cache,
            metadata_base_url=BASE,
            fetcher=DirFetcher(metadata_dir),
            bootstrap=bootstrap,
        )
        try:
            updater.refresh()
        except Exception as e:  # the oracle's refusal, whatever its class, is the answer
            print(f"refused: {type(e).__name__}: {e}")
            return 1
        for path, want in expected.items():
            info = updater.get_targetinfo(path)
            if info is None:
                print(f"missing target {path}")
                return 1
            got = (info.length, info.hashes.get("sha256"), info.custom)
            if got != (want["length"], want["sha256"], want["custom"]):
                print(f"target {path}: {got} != {want}")
                return 1
    print(f"verified {len(expected)} targets")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
