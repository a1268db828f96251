#!/usr/bin/env python3
"""Signed v2 proof headers for curl, for bench/streaming.sh.

    proof.py BASE_URL address              prints the account's address
    proof.py BASE_URL 'OPERATION_JSON'     asks BASE_URL/api/v2/auth for a
                                           token and prints a curl config
                                           (X-Auth-Token, X-Public-Key,
                                           X-Signature) for `curl -K`

The account key is fixed (derived from AMO_BENCH_ACCOUNT_SEED, default
"amo-bench-streaming"): the address is the first 20 bytes of the SHA-256 of
the uncompressed SEC1 public key, upper-case hex, as the service computes it.
Token and signing happen outside any timed request.
"""

import hashlib
import json
import os
import sys
import urllib.request

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

base, operation = sys.argv[1], sys.argv[2]
seed = os.environ.get("AMO_BENCH_ACCOUNT_SEED", "amo-bench-streaming").encode()
key = ec.derive_private_key(
    int.from_bytes(hashlib.sha256(seed).digest(), "big"), ec.SECP256R1()
)
public = key.public_key().public_bytes(
    serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
)
address = hashlib.sha256(public).hexdigest()[:40].upper()
if operation == "address":
    print(address)
    sys.exit(0)

request = urllib.request.Request(
    base + "/api/v2/auth",
    data=json.dumps({"user": address, "operation": json.loads(operation)}).encode(),
    headers={"Content-Type": "application/json"},
)
with urllib.request.urlopen(request, timeout=10) as answer:
    token = json.load(answer)["token"]
signature = key.sign(token.encode(), ec.ECDSA(hashes.SHA256()))  # DER
print(f'header = "X-Auth-Token: {token}"')
print(f'header = "X-Public-Key: {public.hex()}"')
print(f'header = "X-Signature: {signature.hex()}"')
