"""securesystemslib's encode_canonical (the bytes python-tuf signs) of each value in a JSON
list, printed one hex line per value.

usage: canonical.py VALUES_JSON
"""

import json
import sys

from securesystemslib.formats import encode_canonical

with open(sys.argv[1], encoding="utf-8") as f:
    for value in json.load(f):
        print(encode_canonical(value).encode("utf-8").hex())
