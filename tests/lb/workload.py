"""The workload of tests/lb/run.sh: several clients upload (v2, streamed),
inspect, download and remove parcels through nginx with the amo-storage CLI,
while one replica is killed with SIGKILL in the middle of an upload through
it. Then it checks what the kill may and may not leave behind.

Each client reaches nginx through its own relay (gate.py), which counts what
it sends and can hold it back. To kill a replica while it certainly receives
an upload, the workload waits for a client to be in the middle of a large
upload, holds back every client's bytes until all replicas' received-bytes
counters stand still, lets that one upload send 2 MiB more, and kills the
one replica whose counter moved, with the rest of that upload still held.

Python stdlib only (the S3 checks use tests/lb/s3.py). Settings come from the
environment of /tmp/amo-local/env plus AMO_S3_PREFIX; the rest from the
command line (see run.sh). Exit status 0 only when no check failed.

Checks:
  - every client thread and the killer run to their end (a thread that dies
    is a violation, with its traceback), and each client ran the operations
    its plan calls for: one upload per planned size, and for each stored
    parcel its inspect, download and (every other one) remove;
  - every upload that answered an id names the file's content and downloads
    byte for byte (during the workload, and again after the kill for the
    parcels kept);
  - no operation fails except those in flight when the replica died (started
    before the kill, or within GRACE seconds after it, and ended after it);
  - the upload held mid-body on the killed replica fails (it was in flight
    there: the replica is chosen as the one that carries it);
  - every upload that failed left no object (or, if the dead replica had
    committed it just before dying, a byte-exact one), every removed parcel
    is gone, and the bucket holds under the prefix exactly the kept parcels
    with their sizes;
  - no unfinished multipart upload remains under the prefix once the
    replicas' abandoned-upload sweeper has run (polled, with a deadline);
  - uploads refused before their body is read (bad token) answer 401
    through nginx, never 502, and nginx logs no body cut off upstream;
  - X-Request-Id passes through nginx to the replica (its log has the id)
    and is echoed; an idempotent request that nginx first sends to the dead
    replica is retried on a live one and answers 200;
  - each failed upload, retried after the sweep, succeeds and downloads
    byte for byte.
"""

import argparse
import filecmp
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gate  # noqa: E402
import s3  # noqa: E402

KIB, MIB = 1024, 1024 * 1024
# Each client uploads one parcel of each size, in its own shuffled order:
# 1 KiB to 64 MiB; the service's part size is 8 MiB, so the last three go up
# as S3 multipart uploads.
SIZES = [1 * KIB, 300 * KIB + 7, 4 * MIB + 1, 9 * MIB + 123, 24 * MIB + 5, 64 * MIB]
# A failure that starts this long after the kill still counts as caused by
# it (nginx may pick a connection to the dead replica it has not noticed yet).
GRACE = 1.0
CLI_TIMEOUT = 180
# Uploads at least this large are the kill's targets (held mid-body).
BIG = 24 * MIB
# Reads of the replicas' counters (0.3 s apart) that must agree before they
# count as settled.
FLAT_READS = 3
SWEEP_DEADLINE = 120.0
# The service's lease on a parcel's write lock (src/state/lease.rs LEASE).
LOCK_LEASE = 30.0
# How long to probe for nginx's retry from the dead replica: six times its
# fail_timeout (deploy/nginx: max_fails=1 fail_timeout=5s).
RETRY_PROBE_SECS = 30.0

T0 = time.monotonic()


def now():
    return time.monotonic() - T0


def say(*parts):
    print(f"lb [{now():6.1f}s]", *parts, file=sys.stderr, flush=True)


class Run:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.ops = []  # dicts: client, op, id, size, start, end, ok, detail
        self.violations = []
        self.kill_at = None
        self.uploads_done = 0
        self.stop = threading.Event()
        self.bytes_up = 0
        self.bytes_down = 0
        self.verified = set()  # parcel ids downloaded byte for byte at least once
        self.downloads_verified = 0
        self.in_flight_multipart_at_kill = []
        self.victim = None  # address of the replica killed
        self.designated = None  # the upload it was carrying when killed
        self.gates = gate.Gates()
        self.started_threads = set()
        self.finished_threads = set()
        self.ops_in_workload = 0  # how many of `ops` the client threads ran
        self.pid_of = dict(zip(args.replica_addr, args.replica_pid))
        with open(os.environ["AMO_KEY_FILE"]) as f:
            keys = json.load(f)
        self.prefix = os.environ["AMO_S3_PREFIX"]
        if not self.prefix.startswith("lb-test-"):
            raise SystemExit(f"refusing to work on AMO_S3_PREFIX={self.prefix!r}: not lb-test-*")
        self.s3 = s3.S3(
            os.environ["AMO_S3_ENDPOINT"],
            os.environ.get("AMO_S3_BUCKET", "amo"),
            os.environ.get("AMO_S3_REGION", "us-east-1"),
            keys["access_key"],
            keys["secret_key"],
        )

    # ----- bookkeeping -------------------------------------------------
    def guarded(self, name, target, *args):
        """Runs `target(*args)` in a thread of the workload: an exception
        there is a violation (with its traceback), and the thread is only
        counted as finished once `target` returned."""
        try:
            target(*args)
        except BaseException:  # noqa: BLE001 - every death is reported
            self.violation(f"thread {name} died: {traceback.format_exc().strip()}")
            raise
        with self.lock:
            self.finished_threads.add(name)

    def start_thread(self, name, target, *args, daemon=False):
        thread = threading.Thread(target=self.guarded, args=(name, target, *args), name=name, daemon=daemon)
        with self.lock:
            self.started_threads.add(name)
        thread.start()
        return thread

    def check_threads(self):
        """Every thread started ran to its end."""
        with self.lock:
            dead = sorted(self.started_threads - self.finished_threads)
        for name in dead:
            self.violation(f"thread {name} did not finish its work")

    def check_planned(self, clients):
        """Every client went through each of its planned uploads, and the
        operations that ran are the ones its plan calls for."""
        for client in clients:
            planned = len(client["uploads"])
            if client["completed"] != planned:
                self.violation(f"{client['name']} went through {client['completed']} of its {planned} planned uploads")
            expected = {"upload": 0, "inspect": 0, "download": 0, "remove": 0}
            for upload in client["uploads"]:
                expected["upload"] += 1
                if upload["stored"]:
                    expected["inspect"] += 1 + (1 if upload["removed"] else 0)
                    expected["download"] += 1
                if upload.get("remove_op") is not None:
                    expected["remove"] += 1
            with self.lock:
                ran = {op: 0 for op in expected}
                for op in self.ops[: self.ops_in_workload]:
                    if op["client"] == client["name"]:
                        ran[op["op"]] = ran.get(op["op"], 0) + 1
            if ran != expected:
                self.violation(f"{client['name']} ran {ran}, its plan and outcomes call for {expected}")

    def violation(self, text):
        with self.lock:
            self.violations.append(text)
        say("VIOLATION:", text)

    def record(self, **op):
        with self.lock:
            self.ops.append(op)
        return op

    # ----- the CLI -----------------------------------------------------
    def cli(self, client, op, *args, parcel=None, size=0):
        start = now()
        env = dict(os.environ, AMO_ENDPOINT=client["endpoint"], AMO_KEY=client["key"])
        try:
            done = subprocess.run(
                [self.args.bin, "parcel", op, *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=CLI_TIMEOUT,
            )
            ok, out, err = done.returncode == 0, done.stdout, done.stderr.strip()
        except subprocess.TimeoutExpired:
            ok, out, err = False, "", f"timed out after {CLI_TIMEOUT} s"
        return self.record(
            client=client["name"], op=op, id=parcel, size=size, start=start, end=now(),
            ok=ok, out=out, detail=err.splitlines()[-1] if err else "",
        )

    def download_and_compare(self, client, parcel, source, size):
        target = os.path.join(self.args.work, f"dl-{client['name']}-{parcel[:16]}")
        op = self.cli(client, "download", parcel, "-o", target, parcel=parcel, size=size)
        try:
            if not op["ok"]:
                return False
            if os.path.getsize(target) != size or not filecmp.cmp(source, target, shallow=False):
                self.violation(f"download of {parcel} differs from what was uploaded")
                return False
            with self.lock:
                self.bytes_down += size
                self.downloads_verified += 1
                self.verified.add(parcel)
            return True
        finally:
            if os.path.exists(target):
                os.unlink(target)

    # ----- one client --------------------------------------------------
    def client_loop(self, client):
        for upload in client["uploads"]:
            self.client_step(client, upload)
            client["completed"] += 1

    def client_step(self, client, upload):
        """One planned upload, then its inspect, download and remove."""
        parcel, path, size = upload["id"], upload["path"], upload["size"]
        client["current"] = upload
        op = self.cli(client, "upload", path, parcel=parcel, size=size)
        client["current"] = None
        upload["op"] = op
        if not op["ok"]:
            say(f"{client['name']}: upload {size} B failed: {op['detail']}")
            return
        answered = op["out"].strip().splitlines()[-1] if op["out"].strip() else ""
        if answered != parcel:
            self.violation(f"upload answered id {answered!r}, expected {parcel}")
            return
        with self.lock:
            self.uploads_done += 1
            self.bytes_up += size
        upload["stored"] = True
        inspect = self.cli(client, "inspect", parcel, parcel=parcel)
        if inspect["ok"]:
            meta = json.loads(inspect["out"])
            if meta.get("size") != size or meta.get("owner") != client["address"]:
                self.violation(f"inspect {parcel}: {meta} (expected size {size}, owner {client['address']})")
        if not self.download_and_compare(client, parcel, path, size):
            return
        if upload["remove"]:
            removed = self.cli(client, "remove", parcel, parcel=parcel)
            upload["remove_op"] = removed
            if removed["ok"]:
                upload["removed"] = True
                gone = self.cli(client, "inspect", parcel, parcel=parcel)
                if gone["detail"].startswith("error: 404 "):
                    gone["ok"] = True  # the expected answer, no failure
                elif gone["ok"]:
                    self.violation(f"{parcel} still inspectable after its remove: {gone['out'][:200]}")
                # Any other failure is judged against the kill's time.

    # ----- the kill ----------------------------------------------------
    def bytes_received(self, addr):
        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        match = re.search(r"^amo_parcel_bytes_received_total (\d+)", text, re.M)
        return int(match.group(1)) if match else 0

    def quiet_counters(self, deadline):
        """Every replica's received-bytes counter, once it has not moved
        for FLAT_READS reads in a row (client bytes are held back)."""
        last, same = None, 0
        while now() < deadline:
            current = {addr: self.bytes_received(addr) for addr in self.args.replica_addr}
            same = same + 1 if current == last else 0
            if same >= FLAT_READS - 1:
                return current
            last = current
            time.sleep(0.3)
        return None

    def killer(self, clients, min_uploads):
        """Once `min_uploads` uploads are done, waits for a client to be in
        the middle of a large upload, finds the replica that carries it, and
        kills that replica with SIGKILL while the upload is held mid-body."""
        attempts = 0
        while not self.stop.is_set():
            time.sleep(0.05)
            with self.lock:
                if self.uploads_done < min_uploads:
                    continue
            for client in clients:
                upload, conn = client["current"], client["relay"].latest()
                if upload is None or conn is None or conn.closed or upload["size"] < BIG:
                    continue
                if 12 * MIB <= conn.sent <= upload["size"] - 6 * MIB:
                    attempts += 1
                    if self.kill_mid_upload(client, upload, conn):
                        return
                    if attempts >= 5:
                        self.violation("could not isolate the replica of an upload in 5 attempts")
                        return
                    break

    def kill_mid_upload(self, client, upload, conn):
        self.gates.pause()
        try:
            before = self.quiet_counters(now() + 10)
            if before is None:
                say("replica counters did not settle with client bytes held back; trying again")
                return False
            self.gates.allow(conn, 2 * MIB)
            self.gates.wait_sent(conn, conn.allowed_until, 5)
            after = self.quiet_counters(now() + 10)
            if after is None or conn.closed:
                say("the released upload did not settle; trying again")
                return False
            grew = {addr: after[addr] - before[addr] for addr in after if after[addr] != before[addr]}
            if len(grew) != 1 or min(grew.values()) < MIB:
                say(f"which replica carries the upload is ambiguous ({grew}); trying again")
                return False
            (victim,) = grew
            os.kill(self.pid_of[victim], signal.SIGKILL)
            self.kill_at, self.victim, self.designated = now(), victim, upload
            say(f"SIGKILL replica {victim} (pid {self.pid_of[victim]}) while it receives {client['name']}'s "
                f"{upload['size']} B upload, {conn.sent} B of it sent")
            try:
                self.in_flight_multipart_at_kill = self.s3.list_uploads(self.prefix)
            except Exception as err:  # noqa: BLE001 - reported, not fatal
                say(f"could not list multipart uploads right after the kill: {err}")
            return True
        finally:
            conn.allowed_until = None
            self.gates.resume()

    # ----- checks through nginx ---------------------------------------
    def get(self, path, request_id):
        request = urllib.request.Request(self.args.endpoint + path, headers={"X-Request-Id": request_id})
        try:
            with urllib.request.urlopen(request, timeout=20) as answer:
                return answer.status, answer.headers.get_all("X-Request-Id") or [], answer.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers.get_all("X-Request-Id") or [], err.read()

    def replica_logged(self, addr, request_id, wait=5.0):
        log = self.args.replica_log[self.args.replica_addr.index(addr)]
        needle = f'"request_id":"{request_id}"'
        deadline = time.monotonic() + wait
        while True:
            with open(log, errors="replace") as f:
                if needle in f.read():
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)

    def access_log_line(self, request_id, wait=5.0):
        deadline = time.monotonic() + wait
        while True:
            with open(self.args.access_log, errors="replace") as f:
                for line in f:
                    if f"req_id={request_id} " in line:
                        return line.strip()
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)

    def check_request_id(self):
        request_id = f"lb-{os.getpid()}-{random.randrange(1 << 32):08x}"
        status, echoed, _ = self.get("/readyz", request_id)
        if status != 200:
            self.violation(f"GET /readyz through nginx answered {status}")
        if not echoed or any(value != request_id for value in echoed):
            self.violation(f"X-Request-Id {request_id} not echoed as is: {echoed}")
        line = self.access_log_line(request_id)
        served_by = line and re.search(r"upstream=(\S+)", line).group(1)
        if not line or served_by not in self.args.replica_addr:
            self.violation(f"no access-log line naming a replica for {request_id}: {line}")
            return
        if not self.replica_logged(served_by, request_id):
            self.violation(f"replica {served_by} did not log request id {request_id}")
        else:
            say(f"X-Request-Id {request_id}: echoed {len(echoed)}x, logged by nginx and by replica {served_by}")

    def check_retry_after_kill(self, parcel):
        """Idempotent GETs through nginx, one every 0.2 s, until one is seen
        tried on the dead replica first and retried on a live one; every
        answer must be 200. nginx skips the dead replica for fail_timeout
        after each failure there, so the probe spans several of those."""
        dead = self.victim
        deadline = now() + RETRY_PROBE_SECS
        attempt = 0
        while now() < deadline:
            attempt += 1
            request_id = f"lb-retry-{os.getpid()}-{attempt}-{random.randrange(1 << 32):08x}"
            start = now()
            status, _, body = self.get(f"/api/v2/parcels/{parcel}/metadata", request_id)
            self.record(client="probe", op="metadata", id=parcel, size=0, start=start, end=now(),
                        ok=status == 200, out="", detail=f"HTTP {status}")
            if status != 200:
                self.violation(f"idempotent GET after the kill answered {status}: {body[:200]!r}")
                return attempt
            line = self.access_log_line(request_id) or ""
            upstreams = re.search(r"upstream=(.*?) upstream_status=(.*?) rt=", line)
            if upstreams and upstreams.group(1).startswith(dead + ", "):
                served_by = upstreams.group(1).split(", ")[-1]
                if not self.replica_logged(served_by, request_id):
                    self.violation(f"retried request {request_id}: replica {served_by} did not log its id")
                say(f"idempotent retry: {request_id} went to dead {dead}, then {served_by} "
                    f"(upstream_status {upstreams.group(2)}), answered 200; request {attempt} of the probe")
                return attempt
            time.sleep(0.2)
        self.violation(f"no GET of {attempt} in {RETRY_PROBE_SECS:.0f} s after the kill was retried "
                       "from the dead replica to a live one")
        return attempt

    def check_early_refusals(self, body_path, count=8):
        """Uploads refused before their body is read (a bad token: 401) must
        reach the client as 401 through nginx, not as 502 (nginx cut off
        while streaming the body), and must not count against a replica."""
        codes = []
        for _ in range(count):
            done = subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                 "-H", "Content-Type: application/octet-stream", "-H", "X-Auth-Token: not-a-token",
                 "-H", "X-Public-Key: 00", "-H", "X-Signature: 00",
                 "--data-binary", "@" + body_path, self.args.endpoint + "/api/v2/parcels"],
                capture_output=True, text=True, timeout=60)
            codes.append(done.stdout or f"curl exit {done.returncode}")
        if any(code != "401" for code in codes):
            self.violation(f"early refusals of a {os.path.getsize(body_path)} B upload through nginx answered {codes}")
        with open(self.args.error_log, errors="replace") as f:
            cut = [line.strip() for line in f if "while sending request to upstream" in line]
        if cut:
            self.violation(f"nginx was cut off sending a body upstream: {cut[0][:300]}")
        say(f"{count} uploads refused early ({os.path.getsize(body_path)} B bodies, bad token) via nginx: {' '.join(codes)}")
        return codes.count("401")

    # ----- the S3 side -------------------------------------------------
    def wait_for_no_multipart(self):
        started = now()
        while True:
            left = self.s3.list_uploads(self.prefix)
            if not left:
                return now() - started, []
            if now() - started > SWEEP_DEADLINE:
                return now() - started, left
            time.sleep(2)

    def cleanup(self):
        for key, upload_id, _ in self.s3.list_uploads(self.prefix):
            self.s3.abort_upload(key, upload_id)
        for key in self.s3.list_objects(self.prefix):
            self.s3.delete(key)


def make_clients(run, count, seed):
    rng = random.Random(seed)
    clients = []
    for n in range(count):
        name = f"c{n}"
        key = os.path.join(run.args.work, f"{name}.key")
        made = subprocess.run([run.args.bin, "key", "new", "--out", key], capture_output=True, text=True, check=True)
        address = re.search(r"[0-9A-F]{40}", made.stdout + made.stderr).group(0)
        uploads = []
        sizes = SIZES[:]
        rng.shuffle(sizes)
        for i, size in enumerate(sizes):
            path = os.path.join(run.args.work, f"{name}-{i}.bin")
            data = os.urandom(size)
            with open(path, "wb") as f:
                f.write(data)
            parcel = "00000001" + hashlib.sha256(data).hexdigest().upper()
            uploads.append({"id": parcel, "path": path, "size": size, "remove": i % 2 == 1,
                            "stored": False, "removed": False})
        relay = gate.GateRelay(urllib.parse.urlsplit(run.args.endpoint).port, run.gates)
        clients.append({"name": name, "key": key, "address": address, "uploads": uploads,
                        "relay": relay, "endpoint": f"http://127.0.0.1:{relay.port}", "current": None,
                        "completed": 0})
    return clients


def arguments():
    """The command line run.sh gives a workload (tests/tus/workload.py too)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True, help="nginx, http://HOST:PORT")
    parser.add_argument("--bin", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--access-log", required=True)
    parser.add_argument("--error-log", required=True)
    parser.add_argument("--replica-addr", action="append", default=[])
    parser.add_argument("--replica-log", action="append", default=[])
    parser.add_argument("--replica-pid", action="append", type=int, default=[])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--cleanup-only", action="store_true")
    return parser.parse_args()


def main():
    args = arguments()
    run = Run(args)
    if args.cleanup_only:
        run.cleanup()
        return 0
    try:
        return workload(run)
    finally:
        run.cleanup()


def workload(run):
    args = run.args
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)

    # 0. The leftover checker sees a leftover (else its "none" means nothing).
    probe_key = run.prefix + "selftest-multipart"
    upload_id = run.s3.start_upload(probe_key)
    seen = any(u[1] == upload_id for u in run.s3.list_uploads(run.prefix))
    run.s3.abort_upload(probe_key, upload_id)
    if not seen or run.s3.list_uploads(run.prefix):
        run.violation("the S3 checker does not see (or cannot abort) a multipart upload under the prefix")

    # 1. X-Request-Id through nginx to a replica and back.
    run.check_request_id()

    # 2. The workload's files, and early refusals of big bodies.
    clients = make_clients(run, args.clients, seed)
    biggest = max((u for c in clients for u in c["uploads"]), key=lambda u: u["size"])
    early_401s = run.check_early_refusals(biggest["path"])

    # 3. The workload, with the kill.
    total = sum(u["size"] for c in clients for u in c["uploads"])
    say(f"{args.clients} clients x {len(SIZES)} uploads ({total / MIB:.1f} MiB) through {args.endpoint}, seed {seed}")
    # The kill comes once a quarter of the uploads are done, in mid-workload.
    killer = run.start_thread("killer", run.killer, clients, max(2, args.clients * len(SIZES) // 4), daemon=True)
    threads = [run.start_thread(c["name"], run.client_loop, c) for c in clients]
    for thread in threads:
        thread.join()
    run.stop.set()
    killer.join()
    workload_end = now()
    with run.lock:
        run.ops_in_workload = len(run.ops)
    run.check_threads()
    run.check_planned(clients)
    if run.kill_at is None:
        run.violation("the workload ended before the kill condition held: nothing was proved")
        return report(run, clients, {})
    say(f"workload done in {workload_end:.1f}s; kill at {run.kill_at:.1f}s")

    # 4. Which failures the kill explains.
    def by_kill(op):
        return op["start"] <= run.kill_at + GRACE and op["end"] >= run.kill_at

    failed_ops = [op for op in run.ops if not op["ok"]]
    for op in failed_ops:
        if not by_kill(op):
            run.violation(f"{op['client']} {op['op']} {op['id']} failed at {op['start']:.1f}-{op['end']:.1f}s, "
                          f"not while the replica died ({run.kill_at:.1f}s): {op['detail']}")
    failed_uploads = [u for c in clients for u in c["uploads"] if not u["stored"]]
    if run.designated["stored"]:
        run.violation(f"upload {run.designated['id']}, held mid-body on the killed replica, answered an id")

    # 5. A request nginx sends to the dead replica first is retried on a live one.
    kept = [(c, u) for c in clients for u in c["uploads"] if u["stored"] and not u["removed"]]
    if kept:
        retry_attempts = run.check_retry_after_kill(kept[0][1]["id"])
    else:
        retry_attempts = None
        run.violation("no parcel kept to probe with")

    # 6. After the kill: removes that did not complete, then every kept parcel
    #    downloads byte for byte (again).
    for client in clients:
        for upload in client["uploads"]:
            op = upload.get("remove_op")
            if op is not None and not op["ok"]:
                again = run.cli(client, "remove", upload["id"], parcel=upload["id"])
                if again["ok"] or again["detail"].startswith("error: 404 "):
                    upload["removed"] = True
                else:
                    run.violation(f"remove of {upload['id']} retried after the kill failed: {again['detail']}")
    kept = [(c, u) for c in clients for u in c["uploads"] if u["stored"] and not u["removed"]]
    for client, upload in kept:
        if not run.download_and_compare(client, upload["id"], upload["path"], upload["size"]):
            run.violation(f"kept parcel {upload['id']} does not download after the kill")
    for client in clients:
        for upload in client["uploads"]:
            if upload["stored"] and upload["id"] not in run.verified:
                run.violation(f"{upload['id']} answered an id but was never downloaded byte for byte")

    # 7. The bucket: exactly the kept parcels; nothing of the failed uploads.
    objects = run.s3.list_parcels(run.prefix)
    expected = {run.prefix + u["id"]: u["size"] for _, u in kept}
    committed_unacknowledged = 0
    for upload in failed_uploads:
        key = run.prefix + upload["id"]
        if key in objects:
            size, digest = run.s3.sha256_of(key)
            if size == upload["size"] and "00000001" + digest.upper() == upload["id"]:
                committed_unacknowledged += 1
                expected[key] = upload["size"]
                say(f"upload {upload['id']} failed at the client but the dead replica had committed it whole")
            else:
                run.violation(f"failed upload left a partial object {key}: {size} bytes, sha256 {digest}")
    for key, size in sorted(objects.items()):
        if key not in expected:
            run.violation(f"unexpected object {key} ({size} bytes) under the prefix")
        elif expected[key] != size:
            run.violation(f"object {key} is {size} bytes, expected {expected[key]}")
    for key in expected:
        if key not in objects:
            run.violation(f"kept parcel {key} is missing from the bucket")

    # 8. No unfinished multipart upload once the sweeper has run.
    # Multipart uploads of the failed uploads that the dead replica left.
    failed_keys = {run.prefix + u["id"] for u in failed_uploads}
    orphaned = [u for u in run.in_flight_multipart_at_kill if u[0] in failed_keys]
    swept_after, left = run.wait_for_no_multipart()
    for key, upload_id, initiated in left:
        run.violation(f"multipart upload {key} ({upload_id}, initiated {initiated}) still there "
                      f"{now() - run.kill_at:.0f} s after the kill")
    swept_lines = 0
    for log in args.replica_log:
        with open(log, errors="replace") as f:
            swept_lines += sum("aborted an upload its replica abandoned" in line for line in f)

    # 9. A failed upload, retried now, succeeds and reads back.
    retried_ok = upload_409s = 0
    for client in clients:
        for upload in client["uploads"]:
            if upload["stored"] or (run.prefix + upload["id"]) in objects:
                continue
            while True:
                again = run.cli(client, "upload", upload["path"], parcel=upload["id"], size=upload["size"])
                # The dead replica's write lock on this parcel is a lease
                # that lapses up to LOCK_LEASE after its last renewal; until
                # then the service answers 409 upload_in_progress (by design).
                if (not again["ok"] and again["detail"].startswith("error: 409 ")
                        and "in progress" in again["detail"] and now() < run.kill_at + LOCK_LEASE + 5):
                    again["expected"] = True
                    upload_409s += 1
                    time.sleep(1)
                    continue
                break
            if not again["ok"] or again["out"].strip().splitlines()[-1] != upload["id"]:
                run.violation(f"retried upload of {upload['id']} failed: {again['detail']}")
            elif run.download_and_compare(client, upload["id"], upload["path"], upload["size"]):
                retried_ok += 1
            else:
                run.violation(f"retried upload {upload['id']} does not download byte for byte")

    figures = {
        "early_refusals_401": early_401s,
        "victim": run.victim,
        "orphaned_multipart_at_kill": len(orphaned),
        "held_upload_had_multipart": any(u[0] == run.prefix + run.designated["id"]
                                         for u in run.in_flight_multipart_at_kill),
        "swept_log_lines": swept_lines,
        "sweep_wait": swept_after,
        "since_kill": now() - run.kill_at,
        "leftover_multipart": len(left),
        "committed_unacknowledged": committed_unacknowledged,
        "retry_attempts": retry_attempts,
        "retried_uploads_ok": retried_ok,
        "retry_409s_while_lock_lapsed": upload_409s,
        "objects": len(objects),
        "workload_done_at_s": workload_end,
    }
    return report(run, clients, figures)


def report(run, clients, figures):
    uploads = [u for c in clients for u in c["uploads"]]
    ok = [u for u in uploads if u["stored"]]
    failed_ops = [op for op in run.ops if not op["ok"] and not op.get("expected")]
    kill_at = run.kill_at if run.kill_at is not None else float("nan")
    for op in failed_ops:
        say(f"failed: {op['client']} {op['op']} {op['size']} B {op['start'] - kill_at:+.2f}s..{op['end'] - kill_at:+.2f}s "
            f"around the kill: {op['detail']}")
    summary = {
        "uploads_ok": len(ok),
        "uploads_failed": len(uploads) - len(ok),
        "failed_upload_sizes": sorted(u["size"] for u in uploads if not u["stored"]),
        "downloads_verified": run.downloads_verified,
        "ops": len(run.ops),
        "ops_failed": len(failed_ops),
        "MiB_up": round(run.bytes_up / MIB, 1),
        "MiB_down": round(run.bytes_down / MIB, 1),
        **{k: (round(v, 1) if isinstance(v, float) else v) for k, v in figures.items()},
        "threads_finished": f"{len(run.finished_threads)}/{len(run.started_threads)}",
        "violations": len(run.violations),
    }
    print("lb summary: " + " ".join(f"{k}={v}" for k, v in summary.items()), flush=True)
    for text in run.violations:
        print(f"lb VIOLATION: {text}", flush=True)
    return 1 if run.violations else 0


if __name__ == "__main__":
    sys.exit(main())
