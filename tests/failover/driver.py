#!/usr/bin/env python3
"""The Jepsen-style failover check (issue 26), driven by tests/failover/run.sh.

Two replicas of the service share a Redis master, its replica and three
Sentinels; the replication link runs through tests/failover/lagproxy.py, so
the replica lags. While clients work, the master is SIGKILLed again and
again: Sentinel promotes the replica, and the old master comes back as a
replica of the new one.

Workload: bare v1 `upload` tokens. Each token is sent twice at once, with
two different bodies, one to each replica of the service, and both are sent
again over the next seconds. A token's effects are its bodies stored in S3:
more than one is a double effect. At the end the checker counts them, and
checks that every parcel answered 201 or 200 is stored whole, that every
other answer is a JSON error (never a 500, never a dropped connection), and
that no answer took longer than the bound (`--answer-bound`).

    driver.py --self-test      the checker on synthetic outcomes: it must
                               find a planted double use, a lost parcel
                               and a bad answer
    driver.py [options]        the run (see run.sh); exit 1 on a violation
"""

import argparse
import concurrent.futures
import faulthandler
import hashlib
import heapq
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lb"))

import s3  # noqa: E402

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature  # noqa: E402

# How long a token waits before its first use, in seconds (random in this
# range): a token issued before the replica's lag and used within it comes
# back `issued` when the master dies.
FIRST_USE = (0.2, 1.5)
# When the resends of a token go out, in seconds after its first pair.
RESENDS = (1.5, 4.0)
# The answers a request of this workload may get, besides 201 and 200.
EXPECTED_ERRORS = {
    (401, "token_used"),
    (409, "token_in_use"),
    (503, "unavailable"),
    (503, "outcome_unknown"),
}


def say(*parts):
    print("failover:", *parts, file=sys.stderr, flush=True)


class Account:
    """A P-256 account key and its address."""

    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.public = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.address = hashlib.sha256(self.public).hexdigest()[:40].upper()

    def headers(self, token):
        r, s = decode_dss_signature(self.key.sign(token.encode("ascii"), ec.ECDSA(hashes.SHA256())))
        return {
            "X-Auth-Token": token,
            "X-Public-Key": self.public.hex(),
            "X-Signature": (r.to_bytes(32, "big") + s.to_bytes(32, "big")).hex(),
        }


def call(url, body, headers=None, timeout=30):
    """POSTs JSON; answers (status, parsed JSON or None, raw text, seconds)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status, text = answer.status, answer.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode("utf-8", "replace")
    except (OSError, urllib.error.URLError) as err:
        return None, None, f"no answer: {err}", time.monotonic() - started
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return status, parsed, text, time.monotonic() - started


# ---------------------------------------------------------------- the checker


def check(tokens, answers, stored, answer_bound):
    """The verdict on a run.

    tokens:  {token index: [parcel id of body 0, parcel id of body 1]}
    answers: [{"token", "body", "status", "json", "text", "seconds"}]
    stored:  {parcel id: whole (bool)} for the parcels found in S3
    Answers (counts, violations, double-used token indexes)."""
    violations, doubles = [], []
    for index, parcels in sorted(tokens.items()):
        effects = [parcel for parcel in parcels if parcel in stored]
        if len(effects) > 1:
            doubles.append(index)
    if doubles:
        violations.append(f"{len(doubles)} tokens took effect twice: {doubles[:10]}")
    counts = {"requests": len(answers), "created": 0, "already": 0, "errors": {}}
    for answer in answers:
        status, parsed = answer["status"], answer["json"]
        parcel = tokens[answer["token"]][answer["body"]]
        if status in (200, 201):
            counts["created" if status == 201 else "already"] += 1
            if not isinstance(parsed, dict) or parsed.get("id", "").upper() != parcel:
                violations.append(f"token {answer['token']}: {status} names no parcel: {answer['text'][:200]}")
            elif parcel not in stored:
                violations.append(f"token {answer['token']}: {status} for {parcel}, which is not stored")
            elif not stored[parcel]:
                violations.append(f"token {answer['token']}: parcel {parcel} is stored, not whole")
        else:
            code = parsed.get("code") if isinstance(parsed, dict) else None
            if not (isinstance(parsed, dict) and isinstance(parsed.get("error"), str)):
                violations.append(f"token {answer['token']}: not a JSON error: {status} {answer['text'][:200]}")
            elif (status, code) not in EXPECTED_ERRORS:
                violations.append(f"token {answer['token']}: unexpected answer {status} {code}: {answer['text'][:200]}")
            key = f"{status} {code}"
            counts["errors"][key] = counts["errors"].get(key, 0) + 1
        if answer["seconds"] > answer_bound:
            violations.append(
                f"token {answer['token']}: answered {status} after {answer['seconds']:.2f} s, "
                f"past the bound of {answer_bound} s"
            )
    counts["double_effects"] = len(doubles)
    counts["slowest_answer_s"] = round(max((a["seconds"] for a in answers), default=0), 2)
    return counts, violations, doubles


def self_test():
    """The checker on synthetic runs: a clean one passes; a planted double
    use, a 201 whose parcel is missing, a broken parcel, a 500 and a slow
    answer are each caught."""
    tokens = {0: ["A0", "A1"], 1: ["B0", "B1"]}

    def answer(token, body, status, parsed, seconds=0.1):
        return {"token": token, "body": body, "status": status, "json": parsed,
                "text": json.dumps(parsed), "seconds": seconds}

    clean = [answer(0, 0, 201, {"id": "a0"}), answer(0, 1, 409, {"error": "x", "code": "token_in_use"}),
             answer(1, 1, 201, {"id": "B1"}), answer(1, 0, 401, {"error": "x", "code": "token_used"})]
    _, violations, doubles = check(tokens, clean, {"A0": True, "B1": True}, 5)
    assert not violations and not doubles, violations
    cases = {
        "a planted double use": (clean, {"A0": True, "A1": True, "B1": True}),
        "a lost parcel": (clean, {"A0": True}),
        "a parcel not whole": (clean, {"A0": True, "B1": False}),
        "a 500": (clean + [answer(1, 0, 500, {"error": "internal error", "code": "internal"})],
                  {"A0": True, "B1": True}),
        "a dropped connection": (clean + [answer(1, 0, None, None)], {"A0": True, "B1": True}),
        "a slow answer": (clean + [answer(1, 0, 503, {"error": "x", "code": "unavailable"}, 9.0)],
                          {"A0": True, "B1": True}),
    }
    for name, (answers, stored) in cases.items():
        _, violations, _ = check(tokens, answers, stored, 5)
        assert violations, f"the checker missed {name}"
        say(f"self-test: the checker catches {name}: {violations[0]}")
    _, _, doubles = check(tokens, clean, {"A0": True, "A1": True, "B1": True}, 5)
    assert doubles == [0], doubles
    say("self-test: passed")


# ---------------------------------------------------------------- the cluster


def redis(port, *args):
    """One command to the Redis (or Sentinel) on `port`; its reply as text."""
    done = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=5)
    return done.stdout.strip()


class Nodes:
    """The two Redis nodes: port, announced (proxy) port, config, pid file."""

    def __init__(self, spec, sentinels, work):
        self.nodes = []
        for item in spec.split(","):
            port, proxy = item.split(":")
            self.nodes.append({"port": int(port), "proxy": int(proxy)})
        self.sentinels = [int(port) for port in sentinels.split(",")]
        self.work = work

    def master_proxy(self):
        """The master's address as the sentinels name it (a majority)."""
        named = {}
        for port in self.sentinels:
            try:
                reply = redis(port, "SENTINEL", "get-master-addr-by-name", "amo").split()
            except subprocess.TimeoutExpired:
                continue
            if len(reply) == 2:
                named[int(reply[1])] = named.get(int(reply[1]), 0) + 1
        best = max(named.items(), key=lambda item: item[1], default=(None, 0))
        return best[0] if best[1] >= 2 else None

    def by_proxy(self, proxy):
        return next(node for node in self.nodes if node["proxy"] == proxy)

    def pid(self, node):
        with open(os.path.join(self.work, f"redis-{node['port']}.pid")) as file:
            return int(file.read().strip())

    def start(self, node, replica_of=None):
        args = ["redis-server", os.path.join(self.work, f"redis-{node['port']}.conf")]
        if replica_of:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        subprocess.run(args, check=True)

    def synced(self, node):
        info = redis(node["port"], "INFO", "replication")
        return "role:slave" in info and "master_link_status:up" in info


def wait_for(what, predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not happen within {timeout} s")


def killer(nodes, wanted, stop, stats):
    """SIGKILLs the master, waits for Sentinel to promote the other node,
    brings the old master back as its replica; `wanted` times. (Sentinel
    may flap and promote the node just brought back: the roles are asked
    again before each kill.)"""
    while stats["failovers"] < wanted and not stop.is_set():
        roles = {}

        def settled():
            master = nodes.master_proxy()
            if master is None:
                return False
            roles["old"] = nodes.by_proxy(master)
            roles["other"] = next(node for node in nodes.nodes if node is not roles["old"])
            return nodes.synced(roles["other"])

        wait_for("a master with a synced replica", settled, 60)
        old, other = roles["old"], roles["other"]
        time.sleep(random.uniform(1.0, 2.5))  # load on this master
        os.kill(nodes.pid(old), signal.SIGKILL)
        killed = time.monotonic()
        wait_for("Sentinel's promotion", lambda: nodes.master_proxy() == other["proxy"], 60)
        stats["failovers"] += 1
        stats["promotion_s"].append(time.monotonic() - killed)
        say(f"failover {stats['failovers']}: master :{old['port']} killed, :{other['port']} "
            f"promoted after {time.monotonic() - killed:.1f} s")
        nodes.start(old, replica_of=other["proxy"])
    stop.set()


# ---------------------------------------------------------------- the workload


class Workload:
    def __init__(self, args):
        self.args = args
        self.replicas = args.replicas.split(",")
        self.accounts = [Account() for _ in range(4)]
        self.tokens = {}
        self.answers = []
        self.lock = threading.Lock()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=8 * args.clients)
        self.pending = []
        self.due = []  # resends: (when, token, body, address, what)
        self.auth_refused = {}

    def send(self, index, body, account, token, data, replica):
        status, parsed, text, seconds = call(
            f"{replica}/api/v1/parcels",
            {"owner": account.address, "metadata": {"token": index, "body": body}, "data": data.hex()},
            account.headers(token),
        )
        with self.lock:
            self.answers.append({"token": index, "body": body, "status": status, "json": parsed,
                                 "text": text, "seconds": seconds, "replica": replica})

    def one_token(self, index, stop):
        """Answers whether a token was issued (and its sends scheduled)."""
        account = random.choice(self.accounts)
        status, parsed, text, _ = call(
            f"{random.choice(self.replicas)}/api/v1/auth",
            {"user": account.address, "operation": "upload"},
        )
        if status != 200:
            with self.lock:
                self.auth_refused[f"{status}"] = self.auth_refused.get(f"{status}", 0) + 1
            if status != 503:
                say(f"/auth answered {status}: {text[:200]}")
            stop.wait(0.1)  # Redis is failing over: ask again
            return False
        token = parsed["token"]
        bodies = [os.urandom(random.randint(32, 512)) for _ in range(2)]
        with self.lock:
            self.tokens[index] = [
                f"{self.args.storage_id}{hashlib.sha256(body).hexdigest().upper()}" for body in bodies
            ]
        stop.wait(random.uniform(*FIRST_USE))
        sends = [(body, replica) for body, replica in ((0, self.replicas[0]), (1, self.replicas[1]))]
        # Both at once, one to each replica (the client waits for them);
        # then both again, later.
        first = [self.pool.submit(self.send, index, body, account, token, bodies[body], replica)
                 for body, replica in sends]
        concurrent.futures.wait(first)
        with self.lock:
            for delay in RESENDS:
                for body, replica in sends:
                    heapq.heappush(self.due, (time.monotonic() + delay, index, body, account.address,
                                              (account, token, bodies[body], replica)))
        return True

    def resender(self, stop):
        """Sends each resend when it is due, until none is left after `stop`."""
        while True:
            with self.lock:
                ready = self.due and self.due[0][0] <= time.monotonic()
                item = heapq.heappop(self.due) if ready else None
                left = len(self.due)
            if item:
                _, index, body, _, (account, token, data, replica) = item
                self.pending.append(self.pool.submit(self.send, index, body, account, token, data, replica))
            elif stop.is_set() and left == 0:
                return
            else:
                time.sleep(0.02)

    def client(self, first, stop):
        index = first
        while not stop.is_set():
            if self.one_token(index, stop):
                index += self.args.clients
                stop.wait(0.05)

    def run(self, nodes):
        stop, stats = threading.Event(), {"failovers": 0, "promotion_s": []}
        clients = [threading.Thread(target=self.client, args=(first, stop), daemon=True)
                   for first in range(self.args.clients)]
        resender = threading.Thread(target=self.resender, args=(stop,), daemon=True)
        for thread in [*clients, resender]:
            thread.start()
        try:
            killer(nodes, self.args.failovers, stop, stats)
        finally:
            stop.set()
            for thread in [*clients, resender]:
                thread.join(60)
        concurrent.futures.wait(self.pending)
        self.pool.shutdown()
        return stats


def marked_refusals(replicas):
    """The uses the marks refused, from each replica's metrics."""
    total = 0
    for replica in replicas:
        with urllib.request.urlopen(f"{replica}/metrics", timeout=10) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith('amo_tokens_refused_total{reason="token_marked"}'):
                    total += int(float(line.split()[-1]))
    return total


def stored_parcels(args, wanted):
    """{parcel id: whole} of the parcels of `wanted` found under the prefix."""
    with open(args.key_file) as file:
        keys = json.load(file)
    store = s3.S3(args.s3_endpoint, args.bucket, "us-east-1", keys["access_key"], keys["secret_key"])
    found = {}
    for key in store.list_objects(args.prefix):
        parcel = key[len(args.prefix):].upper()
        if parcel in wanted:
            found[parcel] = store.sha256_of(key)[1].upper() == parcel[8:]
    return found


def arguments():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--self-test", action="store_true")
    parser.add_argument("--replicas", help="the two service URLs, comma-separated")
    parser.add_argument("--nodes", help="port:proxy of the two Redis nodes, comma-separated")
    parser.add_argument("--sentinels", help="the sentinels' ports, comma-separated")
    parser.add_argument("--work", help="where the nodes' configs and pid files are")
    parser.add_argument("--failovers", type=int, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--storage-id", default="00000001")
    parser.add_argument("--s3-endpoint")
    parser.add_argument("--bucket", default="amo")
    parser.add_argument("--key-file")
    parser.add_argument("--prefix")
    parser.add_argument("--answer-bound", type=float, default=4.5)
    parser.add_argument("--expect-doubles", action="store_true",
                        help="the gate is off: report double effects, do not fail on them")
    parser.add_argument("--report", help="write the counts as JSON here")
    return parser.parse_args()


def main():
    args = arguments()
    if args.self_test:
        self_test()
        return 0
    socket.setdefaulttimeout(30)
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 shows where it stands
    nodes = Nodes(args.nodes, args.sentinels, args.work)
    workload = Workload(args)
    started = time.monotonic()
    stats = workload.run(nodes)
    stored = stored_parcels(args, {parcel for pair in workload.tokens.values() for parcel in pair})
    counts, violations, doubles = check(workload.tokens, workload.answers, stored, args.answer_bound)
    counts.update(tokens=len(workload.tokens), failovers=stats["failovers"],
                  seconds=round(time.monotonic() - started, 1),
                  slowest_promotion_s=round(max(stats["promotion_s"], default=0), 1),
                  auth_refused=workload.auth_refused,
                  refused_by_marks=marked_refusals(workload.replicas))
    say("counts:", json.dumps(counts, sort_keys=True))
    if args.report:
        with open(args.report, "w") as file:
            json.dump(counts, file)
    if args.expect_doubles:
        say(f"gate off: {len(doubles)} double effects in {stats['failovers']} failovers")
        violations = [v for v in violations if "took effect twice" not in v]
    if stats["failovers"] < args.failovers:
        violations.append(f"only {stats['failovers']} of {args.failovers} failovers happened")
    for violation in violations[:30]:
        say("VIOLATION:", violation)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
