#!/usr/bin/env python3
"""One client, one request at a time: the latency of each operation of the
service beside the same S3 calls made directly, for bench/latency.sh.

    latency.py SERVICE_URL S3_ENDPOINT REDIS_HOST:PORT ITERATIONS SIZE

Each iteration, on kept-alive connections (one to the service, one to RGW,
one to Redis):
  - the service: a token for an upload (`POST /api/v2/auth`), the v2 upload
    of SIZE fresh random bytes, a token and the download, a token and the
    remove; every token is signed outside the timed request;
  - direct: a signed PUT, GET, HEAD and DELETE of SIZE bytes at RGW (SigV4,
    `UNSIGNED-PAYLOAD`, signed outside the timed request), and Redis
    `SET key issued NX PX 60000` (the token's write) over RESP.
Around every service request it reads `amo_backend_calls_total` from the
service's `/metrics` (outside the timed request), so the Redis and RGW
calls each operation made are counted, not assumed. Prints one line per
operation: `op=NAME n=N p50_ms=… p99_ms=… redis=… s3=…` (calls per
request, mean), and exits 1 on any unexpected answer.
"""

import datetime
import hashlib
import hmac
import http.client
import json
import os
import socket
import sys
import time
import urllib.parse

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SERVICE, S3, REDIS = sys.argv[1], sys.argv[2], sys.argv[3]
ITERATIONS, SIZE = int(sys.argv[4]), int(sys.argv[5])
BUCKET = os.environ["AMO_S3_BUCKET"]
REGION = os.environ.get("AMO_S3_REGION", "us-east-1")
with open(os.environ["AMO_KEY_FILE"]) as f:
    S3_KEYS = json.load(f)

KEY = ec.derive_private_key(
    int.from_bytes(hashlib.sha256(b"amo-bench-latency").digest(), "big"), ec.SECP256R1()
)
PUBLIC = KEY.public_key().public_bytes(
    serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
)
ADDRESS = hashlib.sha256(PUBLIC).hexdigest()[:40].upper()


def connection(url):
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn, parts.netloc


def timed(conn, method, path, body=None, headers=None):
    """(status, body, seconds) of one request on a kept-alive connection."""
    start = time.perf_counter()
    conn.request(method, path, body=body, headers=headers or {})
    answer = conn.getresponse()
    data = answer.read()
    return answer.status, data, time.perf_counter() - start


def sigv4(method, host, path, now):
    """SigV4 headers for a request whose payload is not signed."""
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    headers = {
        "host": host,
        "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
        "x-amz-date": amz_date,
    }
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [method, path, "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed,
         "UNSIGNED-PAYLOAD"]
    )
    scope = f"{day}/{REGION}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + S3_KEYS["secret_key"]).encode()
    for part in (day, REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={S3_KEYS['access_key']}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    del headers["host"]  # http.client sends it
    return headers


def backend_calls(conn):
    """{'redis': n, 's3': n}: the service's backend calls so far."""
    status, body, _ = timed(conn, "GET", "/metrics")
    if status != 200:
        sys.exit(f"/metrics answered {status}")
    calls = {"redis": 0.0, "s3": 0.0}
    for line in body.decode().splitlines():
        if line.startswith("amo_backend_calls_total{"):
            for backend in calls:
                if f'backend="{backend}"' in line:
                    calls[backend] += float(line.rsplit(" ", 1)[1])
    return calls


def resp(sock, *args):
    """One Redis command over RESP; the first line of its answer."""
    out = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
    sock.sendall(out.encode())
    data = b""
    while not data.endswith(b"\r\n"):
        data += sock.recv(4096)
    return data


samples = {}
counts = {}


def record(name, seconds, before=None, after=None):
    samples.setdefault(name, []).append(seconds)
    if before is not None:
        c = counts.setdefault(name, {"redis": 0.0, "s3": 0.0})
        for backend in c:
            c[backend] += after[backend] - before[backend]


def check(status, wanted, what):
    if status not in wanted:
        sys.exit(f"{what} answered HTTP {status}")


def service_op(conn, meter, name, method, path, wanted, body=None, headers=None):
    before = backend_calls(meter)
    status, data, seconds = timed(conn, method, path, body, headers)
    after = backend_calls(meter)
    check(status, wanted, name)
    record(name, seconds, before, after)
    return data


def token(conn, meter, operation):
    body = json.dumps({"user": ADDRESS, "operation": operation})
    data = service_op(conn, meter, "auth", "POST", "/api/v2/auth", (200,), body,
                      {"Content-Type": "application/json"})
    jwt = json.loads(data)["token"]
    signature = KEY.sign(jwt.encode(), ec.ECDSA(hashes.SHA256()))
    return {"X-Auth-Token": jwt, "X-Public-Key": PUBLIC.hex(), "X-Signature": signature.hex()}


def main():
    svc, _ = connection(SERVICE)
    meter, _ = connection(SERVICE)
    s3, s3_host = connection(S3)
    redis_host, redis_port = REDIS.rsplit(":", 1)
    redis = socket.create_connection((redis_host, int(redis_port)))
    redis.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    run = os.urandom(4).hex()
    for i in range(ITERATIONS):
        body = os.urandom(SIZE)
        digest = hashlib.sha256(body).hexdigest().upper()
        headers = token(svc, meter, {"name": "upload", "hash": digest})
        headers["Content-Type"] = "application/octet-stream"
        data = service_op(svc, meter, "v2 upload", "POST", "/api/v2/parcels", (201,), body, headers)
        parcel = json.loads(data)["id"]
        headers = token(svc, meter, {"name": "download", "id": parcel})
        data = service_op(svc, meter, "v2 download", "GET", f"/api/v2/parcels/{parcel}", (200,),
                          None, headers)
        if data != body:
            sys.exit("v2 download answered other bytes")
        headers = token(svc, meter, {"name": "remove", "id": parcel})
        service_op(svc, meter, "v2 remove", "DELETE", f"/api/v2/parcels/{parcel}", (204,), None,
                   headers)

        path = f"/{BUCKET}/bench-latency/{run}/{i}"
        for name, method, wanted, payload in (
            ("S3 PUT", "PUT", (200,), body),
            ("S3 GET", "GET", (200,), None),
            ("S3 HEAD", "HEAD", (200,), None),
            ("S3 DELETE", "DELETE", (204,), None),
        ):
            headers = sigv4(method, s3_host, path, datetime.datetime.now(datetime.timezone.utc))
            status, data, seconds = timed(s3, method, path, payload, headers)
            check(status, wanted, name)
            if method == "GET" and data != body:
                sys.exit("S3 GET answered other bytes")
            record(name, seconds)

        start = time.perf_counter()
        answer = resp(redis, "SET", f"amo-bench-latency:{run}:{i}", "issued", "NX", "PX", "60000")
        record("Redis SET NX PX", time.perf_counter() - start)
        if not answer.startswith(b"+OK"):
            sys.exit(f"Redis answered {answer!r}")

    for name, values in samples.items():
        values.sort()
        p50 = values[len(values) // 2] * 1000
        p99 = values[min(len(values) - 1, (len(values) * 99) // 100)] * 1000
        c = counts.get(name)
        calls = (
            f" redis={c['redis'] / len(values):.2f} s3={c['s3'] / len(values):.2f}" if c else ""
        )
        print(f"op={name.replace(' ', '_')} n={len(values)} p50_ms={p50:.3f} p99_ms={p99:.3f}{calls}")


if __name__ == "__main__":
    main()
