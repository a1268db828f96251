"""The workload of tests/tus/run.sh: a real tus client (tuspy, from PyPI)
uploads a 256 MiB parcel in 8 MiB PATCHes through nginx in front of three
replicas (tests/lb/run.sh starts them), with the proof headers of one upload
token on every request: the creation signed over the token, each HEAD and
PATCH after it signed over the request, with the upload's sequence
(SignedUploader, the hook docs/protocol.md shows). During the upload:

  - the connection of a PATCH is cut in the middle (the client reaches nginx
    through a relay, tests/lb/gate.py, which cuts it); tuspy asks HEAD for
    the offset and goes on from there;
  - the replica receiving a later PATCH is killed with SIGKILL (found as in
    tests/lb: every client byte held back until the replicas' received-bytes
    counters stand still, then 2 MiB let through: the one counter that moved
    names it); tuspy goes on on another replica.

Checks: the upload completes and its last PATCH answers X-Parcel-Id, the
storage id followed by the SHA-256; HEAD shows it too; HEAD's offset right
after the cut is where the cut PATCH started at the least and where its
bytes were cut at the most; the
parcel downloads byte for byte through nginx; once it is stored, the bucket
holds under the prefix exactly that parcel: no multipart upload, no tail.
Exit status 0 only when every check held. Takes the command line of
tests/lb/workload.py (most of it unused).
"""

import hashlib
import json
import os
import signal
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lb"))
import gate  # noqa: E402
import s3  # noqa: E402
import workload as lb_workload  # noqa: E402

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature  # noqa: E402
import requests  # noqa: E402 - tuspy's own HTTP client
from tusclient import client as tus  # noqa: E402
from tusclient.exceptions import TusCommunicationError  # noqa: E402
from tusclient.uploader import Uploader  # noqa: E402

MIB = 1024 * 1024
SIZE = 256 * MIB
CHUNK = 8 * MIB
CUT_AT = 40 * MIB  # the first PATCH at or past this offset is cut mid-way
KILL_AT = 120 * MIB  # the first PATCH at or past this offset has its replica killed
T0 = time.monotonic()


def say(*parts):
    print(f"tus [{time.monotonic() - T0:6.1f}s]", *parts, file=sys.stderr, flush=True)


class Account:
    def __init__(self, key=None):
        self.key = key or ec.generate_private_key(ec.SECP256R1())
        self.public = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.address = hashlib.sha256(self.public).hexdigest()[:40].upper()

    def sign(self, text):
        """ECDSA P-256/SHA-256 over the ASCII of `text`, as r||s hex."""
        r, s = decode_dss_signature(self.key.sign(text.encode("ascii"), ec.ECDSA(hashes.SHA256())))
        return (r.to_bytes(32, "big") + s.to_bytes(32, "big")).hex()

    def proof(self, token, signed=None):
        """The proof headers; the signature over `signed`, else the token."""
        return {
            "X-Auth-Token": token,
            "X-Public-Key": self.public.hex(),
            "X-Signature": self.sign(token if signed is None else signed),
        }


def request_text(method, url, token, offset="", sequence=""):
    """What X-Signature signs on an upload after its creation."""
    upload = url.rstrip("/").rsplit("/", 1)[1]
    return f"{method}\n{upload}\n{offset}\n{sequence}\n{token}"


class SignedUploader(Uploader):
    """tuspy's Uploader, each HEAD and PATCH signed over the request with the
    upload's sequence. The client's headers carry the creation's proof
    (over the token alone)."""

    def __init__(self, *args, account, token, **kwargs):
        self.account, self.token, self.sequence = account, token, 0
        super().__init__(*args, **kwargs)

    def get_headers(self):
        # Once the upload exists, tuspy asks these only for a PATCH.
        headers = super().get_headers()
        if self.url:
            text = request_text("PATCH", self.url, self.token, self.offset, self.sequence)
            headers.update({"X-Upload-Sequence": str(self.sequence), "X-Signature": self.account.sign(text)})
        return headers

    def get_offset(self):
        # tuspy's HEAD (before each retry), signed, learning the sequence.
        headers = dict(super().get_headers(), **{"X-Signature": self.account.sign(request_text("HEAD", self.url, self.token))})
        resp = requests.head(self.url, headers=headers, verify=self.verify_tls_cert, cert=self.client_cert)
        if "upload-offset" not in resp.headers:
            raise TusCommunicationError(f"HEAD answered {resp.status_code}", resp.status_code, resp.content)
        self.sequence = int(resp.headers["x-upload-sequence"])
        return int(resp.headers["upload-offset"])

    def upload_chunk(self):
        super().upload_chunk()
        self.sequence = int(self.request.response_headers["x-upload-sequence"])


def call(method, url, headers=None, body=None, timeout=60):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def token(endpoint, account, operation):
    status, _, body = call(
        "POST",
        f"{endpoint}/api/v2/auth",
        {"Content-Type": "application/json"},
        json.dumps({"user": account.address, "operation": operation}).encode(),
    )
    if status != 200:
        raise RuntimeError(f"/auth answered {status}: {body[:200]!r}")
    return json.loads(body)["token"]


def download(endpoint, account, parcel):
    """Downloads `parcel` with a fresh token: (its size, its SHA-256 in upper hex)."""
    proof = account.proof(token(endpoint, account, {"name": "download", "id": parcel}))
    request = urllib.request.Request(f"{endpoint}/api/v2/parcels/{parcel}", headers=proof)
    got, size = hashlib.sha256(), 0
    with urllib.request.urlopen(request, timeout=120) as answer:
        while block := answer.read(MIB):
            got.update(block)
            size += len(block)
    return size, got.hexdigest().upper()


def bytes_received(addr):
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("amo_parcel_bytes_received_total "):
                return int(line.split()[1])
    return 0


class Run:
    def __init__(self, args):
        self.args = args
        self.violations = []
        self.prefix = os.environ["AMO_S3_PREFIX"]
        if not self.prefix.startswith("lb-test-"):
            raise SystemExit(f"refusing to work on AMO_S3_PREFIX={self.prefix!r}: not lb-test-*")
        with open(os.environ["AMO_KEY_FILE"]) as f:
            keys = json.load(f)
        self.s3 = s3.S3(
            os.environ["AMO_S3_ENDPOINT"],
            os.environ.get("AMO_S3_BUCKET", "amo"),
            os.environ.get("AMO_S3_REGION", "us-east-1"),
            keys["access_key"],
            keys["secret_key"],
        )
        self.pid_of = dict(zip(args.replica_addr, args.replica_pid))
        self.gates = gate.Gates()
        self.cut_offset = None
        self.killed = None

    def violation(self, text):
        say("VIOLATION:", text)
        self.violations.append(text)

    def cleanup(self):
        for key, upload_id, _ in self.s3.list_uploads(self.prefix):
            self.s3.abort_upload(key, upload_id)
        for key in self.s3.list_objects(self.prefix):
            self.s3.delete(key)

    def quiet_counters(self, deadline):
        last, same = None, 0
        while time.monotonic() < deadline:
            current = {addr: bytes_received(addr) for addr in self.args.replica_addr if addr not in (self.killed,)}
            same = same + 1 if current == last else 0
            if same >= 2:
                return current
            last = current
            time.sleep(0.3)
        return None

    def kill_receiver(self, conn):
        """SIGKILLs the replica that receives `conn`'s PATCH; True if done."""
        self.gates.pause()
        try:
            before = self.quiet_counters(time.monotonic() + 10)
            if before is None:
                return False
            self.gates.allow(conn, 2 * MIB)
            self.gates.wait_sent(conn, conn.allowed_until, 5)
            after = self.quiet_counters(time.monotonic() + 10)
            if after is None or conn.closed:
                return False
            grew = [addr for addr in after if after[addr] - before.get(addr, 0) >= MIB]
            if len(grew) != 1:
                say(f"which replica receives the PATCH is ambiguous ({grew}); trying again")
                return False
            victim = grew[0]
            os.kill(self.pid_of[victim], signal.SIGKILL)
            self.killed = victim
            say(f"SIGKILL replica {victim} (pid {self.pid_of[victim]}) while it receives a PATCH")
            return True
        finally:
            conn.allowed_until = None
            self.gates.resume()


def next_patch(run, relay, uploader, at_least):
    """Holds every client byte back once the upload passed `at_least`, and
    answers the connection of the next PATCH (nothing of it sent yet)."""
    while uploader.offset < at_least:
        time.sleep(0.005)
    with relay.lock:
        seen = len(relay.conns)
        # The PATCH in flight goes on; the next one waits.
        for conn in relay.conns:
            conn.allowed_until = 1 << 62
        run.gates.pause()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with relay.lock:
            if len(relay.conns) > seen:
                return relay.conns[-1]
        time.sleep(0.01)
    run.gates.resume()
    return None


def chaos(run, relay, uploader, head):
    """Cuts one PATCH mid-way, then kills the replica of a later one."""
    conn = next_patch(run, relay, uploader, CUT_AT)
    if conn is None:
        run.violation("no PATCH came to cut")
        return
    at = uploader.offset
    run.gates.allow(conn, 3 * MIB + 12345)
    run.gates.wait_sent(conn, conn.allowed_until, 10)
    time.sleep(0.5)
    conn.cut()
    run.gates.resume()
    say(f"cut the PATCH at offset {at} after {conn.sent} bytes through the relay")
    time.sleep(1)
    run.cut_offset = head()
    say(f"HEAD after the cut: offset {run.cut_offset}")
    if run.cut_offset is None or not at <= run.cut_offset <= at + conn.sent:
        run.violation(f"HEAD after the cut of the PATCH at {at} answered offset {run.cut_offset}")
    for _ in range(5):
        conn = next_patch(run, relay, uploader, max(KILL_AT, uploader.offset))
        if conn is not None and run.kill_receiver(conn):
            return
    run.violation("could not kill the replica of a PATCH")


def workload(run):
    args = run.args
    endpoint = args.endpoint
    nginx_port = int(endpoint.rsplit(":", 1)[1])
    path = os.path.join(args.work, "tus-256.bin")
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(SIZE // MIB):
            block = os.urandom(MIB)
            digest.update(block)
            f.write(block)
    sha = digest.hexdigest().upper()
    expected_id = "00000001" + sha

    account = Account()
    upload_token = token(endpoint, account, {"name": "upload", "hash": sha})
    proof = account.proof(upload_token)
    relay = gate.GateRelay(nginx_port, run.gates)
    base = f"http://127.0.0.1:{relay.port}"
    client = tus.TusClient(f"{base}/api/v2/uploads", headers=proof)
    uploader = SignedUploader(
        client=client,
        account=account,
        token=upload_token,
        file_path=path,
        chunk_size=CHUNK,
        retries=60,
        retry_delay=1,
        metadata={"metadata": json.dumps({"name": "tus-256"})},
    )
    uploader.set_url(uploader.create_url())
    say(f"created {uploader.url}; uploading {SIZE} bytes in {CHUNK}-byte PATCHes through nginx")

    def signed_head():
        url = uploader.url.replace(base, endpoint)
        proof = account.proof(upload_token, request_text("HEAD", url, upload_token))
        return call("HEAD", url, dict(proof, **{"Tus-Resumable": "1.0.0"}))

    def head():
        status, headers, _ = signed_head()
        lower = {k.lower(): v for k, v in headers.items()}
        return int(lower["upload-offset"]) if status == 200 else None

    failure = []

    def upload():
        try:
            uploader.upload()
        except Exception:  # noqa: BLE001 - reported as a violation
            failure.append(traceback.format_exc())

    worker = threading.Thread(target=upload, daemon=True)
    started = time.monotonic()
    worker.start()
    chaos_thread = threading.Thread(target=chaos, args=(run, relay, uploader, head), daemon=True)
    chaos_thread.start()
    worker.join(300)
    elapsed = time.monotonic() - started
    if worker.is_alive() or failure:
        run.violation(f"the tus upload did not finish: {failure or 'still running after 300 s'}")
        return
    chaos_thread.join(5)
    say(f"uploaded in {elapsed:.1f}s ({SIZE / MIB / elapsed:.1f} MiB/s with the cut and the kill)")
    if run.killed is None:
        run.violation("no replica was killed")

    parcel = uploader.request.response_headers.get("x-parcel-id")
    if parcel != expected_id:
        run.violation(f"the last PATCH answered X-Parcel-Id {parcel!r}, not {expected_id}")
    status, headers, _ = signed_head()
    lower = {k.lower(): v for k, v in headers.items()}
    if status != 200 or lower.get("x-parcel-id") != expected_id or lower.get("upload-offset") != str(SIZE):
        run.violation(f"HEAD after completion: {status} {lower}")

    # The parcel downloads byte for byte through nginx.
    size, got = download(endpoint, account, expected_id)
    if size != SIZE or got != sha:
        run.violation(f"the download is {size} bytes with SHA-256 {got}")
    else:
        say("the parcel downloads byte for byte")

    # Nothing staged is left: exactly the parcel under the prefix (beside
    # the marks of the tokens used, which `list_parcels` leaves out).
    deadline = time.monotonic() + 90
    while True:
        objects = run.s3.list_parcels(run.prefix)
        uploads = run.s3.list_uploads(run.prefix)
        if list(objects) == [run.prefix + expected_id] and not uploads:
            break
        if time.monotonic() > deadline:
            run.violation(f"under the prefix after the upload: objects {objects}, multipart uploads {uploads}")
            break
        time.sleep(1)

    remove = account.proof(token(endpoint, account, {"name": "remove", "id": expected_id}))
    status, _, body = call("DELETE", f"{endpoint}/api/v2/parcels/{expected_id}", remove)
    if status != 204:
        run.violation(f"remove answered {status}: {body[:200]!r}")


def main():
    args = lb_workload.arguments()
    run = Run(args)
    if args.cleanup_only:
        run.cleanup()
        return 0
    try:
        workload(run)
    except Exception:  # noqa: BLE001 - reported as a violation
        run.violation(traceback.format_exc())
    finally:
        run.cleanup()
        try:
            os.remove(os.path.join(args.work, "tus-256.bin"))
        except OSError:
            pass
    if run.violations:
        say(f"FAILED: {len(run.violations)} violation(s)")
        return 1
    say("OK: 256 MiB through nginx with tuspy, a cut PATCH and a SIGKILLed replica")
    return 0


if __name__ == "__main__":
    sys.exit(main())
