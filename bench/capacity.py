"""What one operation of each kind costs the backends and the service,
measured, for docs/capacity.md: Redis commands (INFO commandstats of a Redis
of its own), RGW requests (the RGW's access log, filtered by this run's S3
prefix), and the service's CPU (utime + stime of its process) and peak RSS.

  capacity.py SERVICE_BIN RGW_LOG [N]

SERVICE_BIN is a built amo-storage; RGW_LOG the local RGW's log file
(deploy/local/ceph.sh writes /tmp/amo-local/ceph/log/client.rgw.log, with
its access lines). Settings come from the environment (deploy/local/up.sh's
env file): the S3 endpoint, bucket and key file; Redis is started here, on
a free port, so that nothing else counts in its statistics. Each kind runs
N times (default 200) one after another; the figures are per operation.
Prints a markdown table, then the Redis bytes of each key kind: of the keys
the runs leave, and of those that live only while a request works (a
commit's write lock, a claimed token), caught live through keyspace
notifications.
"""

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "tus"))
from workload import Account  # noqa: E402  (the signing account of the tus checks)

TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def call(method, url, headers=None, body=None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def expect(status, wanted, what, body=b""):
    if status != wanted:
        raise SystemExit(f"capacity: {what} answered {status}, not {wanted}: {body[:200]!r}")


class Redis:
    """A Redis of this run's own, so that its statistics count the service alone."""

    def __init__(self, work):
        self.port = free_port()
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", work],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            if self.cli("PING").strip() == "PONG":
                return
            time.sleep(0.05)
        raise SystemExit("capacity: redis-server did not answer")

    def cli(self, *args):
        return subprocess.run(["redis-cli", "-p", str(self.port), *args],
                              capture_output=True, text=True).stdout

    def calls(self):
        counts = {}
        for line in self.cli("INFO", "commandstats").splitlines():
            match = re.match(r"cmdstat_([^:]+):calls=(\d+)", line)
            if match:
                counts[match.group(1)] = int(match.group(2))
        return counts

    def stop(self):
        self.process.terminate()
        self.process.wait()


class LeaseWatch:
    """Keys that live only while a request works (a commit's write lock, a
    claimed token, a live multipart mark), caught as the service sets them:
    Redis's keyspace notifications name each key set, and `MEMORY USAGE`
    measures it at once, before the request deletes it. Keeps the first
    sample of each kind."""

    KINDS = (("amo:lock:", "amo:lock:{…} (write lock, during a commit)"),
             ("amo:multipart:", "amo:multipart:{…} (live multipart mark)"),
             ("amo:upload-lock:", "amo:upload-lock:{…} (during a PATCH)"))

    def __init__(self, redis):
        self.redis, self.samples = redis, {}
        redis.cli("CONFIG", "SET", "notify-keyspace-events", "E$")
        self.process = subprocess.Popen(
            ["redis-cli", "-p", str(redis.port), "--csv", "SUBSCRIBE", "__keyevent@0__:set"],
            stdout=subprocess.PIPE, text=True)
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def watch(self):
        for line in self.process.stdout:
            key = line.strip().rsplit(",", 1)[-1].strip('"')
            kind = next((name for prefix, name in self.KINDS if key.startswith(prefix)), None)
            if key.startswith("amo:token:") and self.redis.cli("GET", key).startswith("claimed:"):
                kind = "amo:token:{…} (claimed by a request)"
            if kind and kind not in self.samples:
                size = self.redis.cli("MEMORY", "USAGE", key).strip()
                if size.isdigit():
                    self.samples[kind] = size

    def stop(self):
        self.process.terminate()
        self.process.wait()


class RgwLog:
    """The RGW's access lines for requests under `prefix` since the last look."""

    LINE = re.compile(r'beast: \S+: \S+ - \S+ \[[^]]+\] "(\w+) (\S+) HTTP')

    def __init__(self, path, prefix):
        self.path, self.prefix, self.offset = path, prefix, os.path.getsize(path)
        self.quoted = urllib.request.quote(prefix, safe="")

    def since(self):
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            text = log.read().decode(errors="replace")
            self.offset = log.tell()
        kinds = {}
        for line in text.splitlines():
            match = self.LINE.search(line)
            if not match or (self.prefix not in match.group(2) and self.quoted not in match.group(2)):
                continue
            method, target = match.groups()
            query = target.split("?", 1)[1] if "?" in target else ""
            kind = method
            for marker, name in (("uploads", "uploads"), ("uploadId", "uploadId"),
                                 ("partNumber", "part"), ("list-type", "list")):
                if marker in query:
                    kind = f"{method} ?{name}"
            kinds[kind] = kinds.get(kind, 0) + 1
        return kinds


class Service:
    def __init__(self, binary, redis_port, prefix, work, lease_secs=3600):
        self.port = free_port()
        env = dict(os.environ)
        env.update({
            "AMO_REDIS_URL": f"redis://127.0.0.1:{redis_port}",
            "AMO_S3_PREFIX": prefix,
            # One sweep at start, then none within the measurement.
            "AMO_LEASE_SECS": str(lease_secs),
            "AMO_AUTH_RATE_PER_IP": "0",
            # One account and one client make every upload of the run.
            "AMO_MAX_OPEN_UPLOADS_PER_ACCOUNT": "1000000",
            "AMO_MAX_OPEN_UPLOADS_PER_CLIENT": "1000000",
            "AMO_LOG": "warn",
        })
        self.log = open(os.path.join(work, f"service-{self.port}.log"), "w")
        self.process = subprocess.Popen([binary, f"127.0.0.1:{self.port}"], env=env,
                                        stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(200):
            try:
                if call("GET", f"{self.base}/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit("capacity: the service did not become ready")

    def cpu_seconds(self):
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def peak_rss_kib(self):
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.process.terminate()
        self.process.wait()
        self.log.close()


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    binary, rgw_log = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    work = tempfile.mkdtemp(prefix="amo-capacity-")
    prefix = f"capacity-{uuid.uuid4().hex[:12]}/"
    redis = Redis(work)
    leases = None
    service = Service(binary, redis.port, prefix, work)
    log = RgwLog(rgw_log, prefix)
    base = service.base
    account = Account()
    size = 4096
    rows = []
    stock = {}

    def token(operation):
        status, _, body = call("POST", f"{base}/api/v2/auth", {"Content-Type": "application/json"},
                               json.dumps({"user": account.address, "operation": operation}).encode())
        expect(status, 200, "/auth", body)
        return json.loads(body)["token"]

    def measure(name, prepare, operation):
        """Runs `prepare(i)` (not counted) then `operation(i, prepared)` N times."""
        prepared = [prepare(i) for i in range(count)]
        time.sleep(0.5)
        log.since()
        before_calls, before_cpu = redis.calls(), service.cpu_seconds()
        started = time.monotonic()
        for i in range(count):
            operation(i, prepared[i])
        elapsed = time.monotonic() - started
        time.sleep(0.5)  # the RGW writes its access line as it answers
        cpu = service.cpu_seconds() - before_cpu
        after_calls = redis.calls()
        commands = {name: after_calls[name] - before_calls.get(name, 0)
                    for name in after_calls if after_calls[name] != before_calls.get(name, 0)}
        # INFO itself is counted once per look.
        commands["info"] = commands.get("info", 0) - 1
        commands = {k: v for k, v in commands.items() if v > 0}
        rgw = log.since()
        rows.append((name, commands, rgw, cpu, elapsed))

    def auth(i, _):
        token("download")

    def bodies(i):
        return os.urandom(size)

    def upload_v2(i, data):
        sha = hashlib.sha256(data).hexdigest().upper()
        headers = account.proof(token({"name": "upload", "hash": sha}))
        headers["Content-Type"] = "application/octet-stream"
        status, _, body = call("POST", f"{base}/api/v2/parcels", headers, data)
        expect(status, 201, "a v2 upload", body)
        stock.setdefault("v2", []).append(json.loads(body)["id"])

    def nothing(i):
        return None

    def download_v2(i, _):
        parcel = stock["v2"][i]
        headers = account.proof(token({"name": "download", "id": parcel}))
        status, _, body = call("GET", f"{base}/api/v2/parcels/{parcel}", headers)
        expect(status, 200, "a v2 download", body)

    def inspect(i, _):
        status, _, body = call("GET", f"{base}/api/v2/parcels/{stock['v2'][i]}/metadata")
        expect(status, 200, "an inspect", body)

    def remove_v2(i, _):
        parcel = stock["v2"][i]
        headers = account.proof(token({"name": "remove", "id": parcel}))
        status, _, body = call("DELETE", f"{base}/api/v2/parcels/{parcel}", headers)
        expect(status, 204, "a v2 remove", body)

    def upload_v1(i, data):
        headers = account.proof(token("upload"))
        headers["Content-Type"] = "application/json"
        body = json.dumps({"owner": account.address, "metadata": {}, "data": data.hex()}).encode()
        status, _, answer = call("POST", f"{base}/api/v1/parcels", headers, body)
        expect(status, 201, "a v1 upload", answer)
        stock.setdefault("v1", []).append(json.loads(answer)["id"])

    def download_v1(i, _):
        parcel = stock["v1"][i]
        headers = account.proof(token({"name": "download", "id": parcel}))
        status, _, body = call("GET", f"{base}/api/v1/parcels/{parcel}", headers)
        expect(status, 200, "a v1 download", body)

    def remove_v1(i, _):
        parcel = stock["v1"][i]
        headers = account.proof(token({"name": "remove", "id": parcel}))
        status, _, body = call("DELETE", f"{base}/api/v1/parcels/{parcel}", headers)
        expect(status, 204, "a v1 remove", body)

    def tus_create(i, data):
        sha = hashlib.sha256(data).hexdigest().upper()
        upload_token = token({"name": "upload", "hash": sha})
        headers = account.proof(upload_token)
        headers.update({"Tus-Resumable": "1.0.0", "Upload-Length": str(len(data))})
        status, answer_headers, body = call("POST", f"{base}/api/v2/uploads", headers)
        expect(status, 201, "a tus creation", body)
        url = base + answer_headers["location"]
        stock.setdefault("tus", []).append((url, upload_token, data, int(answer_headers.get("x-upload-sequence", "0"))))

    def signed(method, url, upload_token, offset="", sequence=""):
        upload = url.rstrip("/").rsplit("/", 1)[1]
        return account.proof(upload_token, f"{method}\n{upload}\n{offset}\n{sequence}\n{upload_token}")

    def tus_head(i, _):
        url, upload_token, _, _ = stock["tus"][i]
        headers = signed("HEAD", url, upload_token)
        headers["Tus-Resumable"] = "1.0.0"
        status, _, body = call("HEAD", url, headers)
        expect(status, 200, "a tus HEAD", body)

    def tus_patch(half):
        def patch(i, _):
            url, upload_token, data, sequence = stock["tus"][i]
            offset = 0 if half == "first" else len(data) // 2
            chunk = data[:len(data) // 2] if half == "first" else data[len(data) // 2:]
            headers = signed("PATCH", url, upload_token, offset, sequence)
            headers.update({"Tus-Resumable": "1.0.0", "Upload-Offset": str(offset),
                            "X-Upload-Sequence": str(sequence),
                            "Content-Type": "application/offset+octet-stream"})
            status, answer_headers, body = call("PATCH", url, headers, chunk)
            expect(status, 204, f"a tus PATCH ({half} half)", body)
            stock["tus"][i] = (url, upload_token, data, int(answer_headers["x-upload-sequence"]))
        return patch

    try:
        measure("auth (`POST /api/v2/auth`)", nothing, auth)
        measure("v2 upload, 4 KiB (with its `/auth`)", bodies, upload_v2)
        measure("v2 download, 4 KiB (with its `/auth`)", nothing, download_v2)
        measure("inspect (`GET …/metadata`)", nothing, inspect)
        measure("v2 remove (with its `/auth`)", nothing, remove_v2)
        measure("v1 upload, 4 KiB (with its `/auth`)", bodies, upload_v1)
        measure("v1 download, 4 KiB (with its `/auth`)", nothing, download_v1)
        measure("v1 remove (with its `/auth`)", nothing, remove_v1)
        measure("tus create, 4 KiB (with its `/auth`)", bodies, tus_create)
        measure("tus HEAD", nothing, tus_head)
        measure("tus PATCH, first half (stored as the tail)", nothing, tus_patch("first"))
        measure("tus PATCH, completing (tail + rest, commit)", nothing, tus_patch("second"))
        print(f"capacity: {count} of each kind, one at a time, service {binary}, "
              f"{os.cpu_count()} cores, RGW log {rgw_log}")
        print()
        print("| operation | Redis commands per op | RGW requests per op | service CPU µs per op | wall ms per op |")
        print("|---|---|---|---|---|")
        for name, commands, rgw, cpu, elapsed in rows:
            total = sum(commands.values()) / count
            detail = ", ".join(f"{k} {v / count:g}" for k, v in sorted(commands.items()))
            rgw_total = sum(rgw.values()) / count
            rgw_detail = ", ".join(f"{k} {v / count:g}" for k, v in sorted(rgw.items()))
            print(f"| {name} | {total:g} ({detail}) | {rgw_total:g} ({rgw_detail}) | "
                  f"{cpu / count * 1e6:.0f} | {elapsed / count * 1e3:.2f} |")
        print()
        print(f"service peak RSS (VmHWM): {service.peak_rss_kib() / 1024:.1f} MiB")
        # The sweeper: unfinished uploads (a multipart upload and a tail
        # each), then a replica whose sweep passes run every second.
        stock["tus"] = []
        for i in range(count):
            tus_create(i, bodies(i))
            tus_patch("first")(i, None)
        log.since()
        before = redis.calls()
        sweeper = Service(binary, redis.port, prefix, work, lease_secs=2)
        time.sleep(6)
        sweeper.stop()
        time.sleep(0.5)
        after = redis.calls()
        rgw = log.since()
        passes = max(1, sum(v for k, v in rgw.items() if k == "GET ?uploads"))
        commands = sum(after[k] - before.get(k, 0) for k in after) - 1
        print()
        print(f"sweeper, {count} unfinished uploads under the prefix: {passes} passes in 6 s; "
              f"per pass {commands / passes:g} Redis commands, "
              f"{sum(rgw.values()) / passes:g} RGW requests "
              f"({', '.join(f'{k} {v / passes:g}' for k, v in sorted(rgw.items()))})")
        # Redis bytes per key kind, from what the runs left.
        print()
        print("| key kind | Redis bytes (MEMORY USAGE) |")
        print("|---|---|")
        samples = {}
        for key in redis.cli("--scan").split():
            kind = re.sub(r"\{[^}]*\}", "{…}", key)
            kind = re.sub(r"(\{…\}):[0-9a-f]+$", r"\1:<client>", kind)
            samples.setdefault(kind, key)
        token("download")  # one issued token, unused, to measure
        for key in redis.cli("--scan", "--pattern", "amo:token:*").split()[:1]:
            samples["amo:token:{…} (issued)"] = key
        for kind, key in sorted(samples.items()):
            print(f"| `{kind}` | {redis.cli('MEMORY', 'USAGE', key).strip()} |")
        # Keys that live only while a request works, caught live: after the
        # counted runs, as the watch's own commands would count in them.
        leases = LeaseWatch(redis)
        stock["tus"] = []
        for i in range(5):
            upload_v2(i, bodies(i))
            tus_create(i, bodies(i))
            tus_patch("first")(i, None)
            tus_patch("second")(i, None)
        for kind, size in sorted(leases.samples.items()):
            print(f"| `{kind}`, caught live | {size} |")
    finally:
        if leases:
            leases.stop()
        service.stop()
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
