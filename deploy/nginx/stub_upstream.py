"""Stand-in replicas for deploy/nginx/check.sh's proxy-policy checks.

Listens on N free loopback ports (one thread per connection, HTTP/1.1
keep-alive) and answers by path, the way amo-storage would in the cases
nginx's retry policy must get right:

  GET  /healthz              200 {"status": "ok"}
  ANY  /status/502           502 JSON, what `chain_unavailable` looks like
  ANY  /status/503           503 JSON with Retry-After, what `unavailable`
                             (Redis or S3 down) and `busy` look like
  ANY  /drop                 reads the request, then closes the connection
                             without answering: a replica that died after
                             the request reached it
  ANY  /undelivered/<n>     200 {"received": N}: the bytes of body that
                             arrived (a request that must reach some
                             replica exactly once, body whole)
  ANY  /metadata-length      200 {"length": N}: the bytes of the
                             X-Parcel-Metadata header that arrived
  OPTIONS /cors              204, a CORS preflight's answer as the service
                             gives it: the Origin echoed, methods, headers,
                             max-age (deploy/nginx must pass it through)
  ANY  /cors                 200 {"origin": ...} with the Origin echoed and
                             Access-Control-Expose-Headers
  GET  /hits                 200 {"PORT METHOD PATH": count, ...}: every
                             request any listener received (but /hits)

Prints one line "PORT PORT ..." once every listener is bound, then serves
until stdin closes or it is killed. Python stdlib only.
"""

import http.server
import json
import socketserver
import sys
import threading
from collections import Counter

HITS = Counter()
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self, status, body, extra=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        received = len(self.rfile.read(length)) if length else 0
        path = self.path.split("?")[0]
        if path == "/hits":
            with LOCK:
                self._answer(200, dict(HITS))
            return
        with LOCK:
            HITS[f"{self.server.server_address[1]} {self.command} {path}"] += 1
        if path == "/cors" and self.command == "OPTIONS":
            self.send_response(204)
            self.send_header("Access-Control-Allow-Origin", self.headers.get("Origin", ""))
            self.send_header("Access-Control-Allow-Methods", "HEAD, PATCH, DELETE")
            self.send_header("Access-Control-Allow-Headers", self.headers.get("Access-Control-Request-Headers", ""))
            self.send_header("Access-Control-Max-Age", "600")
            self.send_header("Vary", "origin")
            self.end_headers()
        elif path == "/cors":
            self._answer(
                200,
                {"origin": self.headers.get("Origin")},
                [
                    ("Access-Control-Allow-Origin", self.headers.get("Origin", "")),
                    ("Access-Control-Expose-Headers", "Location, Upload-Offset, X-Upload-Sequence"),
                ],
            )
        elif path == "/healthz":
            self._answer(200, {"status": "ok"})
        elif path == "/status/502":
            self._answer(502, {"error": "the chain does not answer", "code": "chain_unavailable"})
        elif path == "/status/503":
            self._answer(
                503,
                {"error": "redis: connection refused", "code": "unavailable"},
                [("Retry-After", "1")],
            )
        elif path == "/drop":
            self.close_connection = True
            self.connection.shutdown(2)
        elif path == "/silent":
            # Received, and never answered: holds the connection until the
            # proxy closes it (its read timeout).
            self.close_connection = True
            self.rfile.read(1)
        elif path.startswith("/undelivered/"):
            self._answer(200, {"received": received})
        elif path == "/metadata-length":
            self._answer(200, {"length": len(self.headers.get("X-Parcel-Metadata", ""))})
        else:
            self._answer(404, {"error": "no such stub path", "code": "not_found"})

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_OPTIONS = _serve


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    # The service takes headers up to its own limits; so does the stub.
    request_queue_size = 64


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    servers = [Server(("127.0.0.1", 0), Handler) for _ in range(count)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(" ".join(str(s.server_address[1]) for s in servers), flush=True)
    sys.stdin.read()  # until the caller closes our stdin (or kills us)


if __name__ == "__main__":
    main()
