"""What tests/image/run.sh sends through the container, with the tus
project's Python client (tuspy) and the standard library.

  through.py tus ENDPOINT WORK
      a 24 MiB parcel up in 8 MiB tus PATCHes; HEAD shows it complete; it
      downloads byte for byte; it is removed.
  through.py drain ENDPOINT STATE -- KILL...
      a v2 upload whose first half is sent, then KILL (the command that
      sends SIGTERM to the container); /readyz must answer 503 within the
      drain grace; the second half is sent and the upload must answer 201
      with the parcel's id. STATE (a JSON file) keeps the account and the id.
  through.py readback ENDPOINT STATE
      the parcel of STATE downloads byte for byte from ENDPOINT (the next
      container), then is removed.

Exit status 0 only when every check held.
"""

import hashlib
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tus"))
from workload import Account, SignedUploader, call, download, request_text, token  # noqa: E402

from cryptography.hazmat.primitives import serialization  # noqa: E402
from tusclient import client as tus  # noqa: E402

MIB = 1024 * 1024


def say(*parts):
    print("image:", *parts, file=sys.stderr, flush=True)


def fail(message):
    raise SystemExit(f"image: FAIL: {message}")


def download_matches(endpoint, account, parcel, sha, size):
    n, got = download(endpoint, account, parcel)
    if n != size or got != sha:
        fail(f"{parcel} downloads as {n} bytes with SHA-256 {got}")
    say(f"{parcel[:16]}… downloads byte for byte ({size} bytes)")


def remove(endpoint, account, parcel):
    proof = account.proof(token(endpoint, account, {"name": "remove", "id": parcel}))
    status, _, body = call("DELETE", f"{endpoint}/api/v2/parcels/{parcel}", proof)
    if status != 204:
        fail(f"remove answered {status}: {body[:200]!r}")


def tus_upload(endpoint, work):
    size, chunk = 24 * MIB, 8 * MIB
    body = os.urandom(size)
    sha = hashlib.sha256(body).hexdigest().upper()
    path = os.path.join(work, "tus.bin")
    with open(path, "wb") as f:
        f.write(body)
    account = Account()
    upload_token = token(endpoint, account, {"name": "upload", "hash": sha})
    proof = account.proof(upload_token)
    client = tus.TusClient(f"{endpoint}/api/v2/uploads", headers=proof)
    uploader = SignedUploader(client=client, account=account, token=upload_token,
                              file_path=path, chunk_size=chunk, retries=0,
                              metadata={"metadata": json.dumps({"name": "image-tus"})})
    uploader.upload()
    parcel = uploader.request.response_headers.get("x-parcel-id")
    if parcel is None or not parcel.endswith(sha):
        fail(f"the last PATCH answered X-Parcel-Id {parcel!r}, not …{sha}")
    head_proof = dict(proof, **{"X-Signature": account.sign(request_text("HEAD", uploader.url, upload_token)),
                                "Tus-Resumable": "1.0.0"})
    status, headers, _ = call("HEAD", uploader.url, head_proof)
    lower = {k.lower(): v for k, v in headers.items()}
    if status != 200 or lower.get("upload-offset") != str(size):
        fail(f"HEAD after the upload: {status} {lower}")
    say(f"tus: {size} bytes in {chunk}-byte PATCHes, parcel {parcel[:16]}…")
    download_matches(endpoint, account, parcel, sha, size)
    remove(endpoint, account, parcel)


def readiness(endpoint):
    """The status of GET /readyz, or None when no connection is taken."""
    try:
        with urllib.request.urlopen(f"{endpoint}/readyz", timeout=2) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def drain(endpoint, state, kill):
    size = 8 * MIB
    body = os.urandom(size)
    sha = hashlib.sha256(body).hexdigest().upper()
    account = Account()
    proof = account.proof(token(endpoint, account, {"name": "upload", "hash": sha}))
    url = urllib.parse.urlsplit(endpoint)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    conn.putrequest("POST", "/api/v2/parcels")
    for name, value in {**proof, "Content-Type": "application/octet-stream",
                        "Content-Length": str(size)}.items():
        conn.putheader(name, value)
    conn.endheaders()
    conn.send(body[: size // 2])
    say(f"upload in flight ({size // 2} of {size} bytes sent); SIGTERM")
    subprocess.run(kill, check=True, stdout=subprocess.DEVNULL)
    # Within the grace (AMO_DRAIN_GRACE_SECS) /readyz answers 503.
    deadline = time.monotonic() + 10
    status = readiness(endpoint)
    while status == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
        status = readiness(endpoint)
    if status != 503:
        fail(f"/readyz answered {status} after SIGTERM, not 503")
    say("/readyz answers 503 after SIGTERM")
    conn.send(body[size // 2:])
    answer = conn.getresponse()
    text = answer.read()
    if answer.status != 201:
        fail(f"the upload in flight at SIGTERM answered {answer.status}: {text[:200]!r}")
    parcel = json.loads(text)["id"]
    if not parcel.endswith(sha):
        fail(f"the upload answered id {parcel}, not …{sha}")
    say(f"the upload in flight at SIGTERM answered 201 ({parcel[:16]}…)")
    pem = account.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    with open(state, "w") as f:
        json.dump({"key": pem.decode(), "id": parcel, "sha": sha, "size": size}, f)


def readback(endpoint, state):
    with open(state) as f:
        saved = json.load(f)
    account = Account(serialization.load_pem_private_key(saved["key"].encode(), None))
    download_matches(endpoint, account, saved["id"], saved["sha"], saved["size"])
    remove(endpoint, account, saved["id"])


def main(argv):
    if argv[:1] == ["tus"] and len(argv) == 3:
        tus_upload(argv[1], argv[2])
    elif argv[:1] == ["drain"] and len(argv) > 4 and argv[3] == "--":
        drain(argv[1], argv[2], argv[4:])
    elif argv[:1] == ["readback"] and len(argv) == 3:
        readback(argv[1], argv[2])
    else:
        raise SystemExit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
