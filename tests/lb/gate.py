"""A TCP relay in front of nginx that can hold back what clients send.

Each client of tests/lb talks to nginx through its own GateRelay (a loopback
port), so the workload knows how many bytes each client connection has sent,
and can pause every client's request bytes (answers keep flowing) and then
let one connection send a few more bytes. That is how it finds which replica
carries a given upload before killing that replica: see Run.kill_mid_upload
in workload.py. Python stdlib only.
"""

import socket
import threading

CHUNK = 256 * 1024


class Gates:
    """What every relay obeys: while paused, a connection sends only up to
    its own allowance."""

    def __init__(self):
        self.cond = threading.Condition()
        self.paused = False

    def pause(self):
        with self.cond:
            self.paused = True

    def resume(self):
        with self.cond:
            self.paused = False
            self.cond.notify_all()

    def allow(self, conn, more):
        with self.cond:
            conn.allowed_until = conn.sent + more
            self.cond.notify_all()

    def wait_turn(self, conn):
        with self.cond:
            while self.paused and not (conn.allowed_until is not None and conn.sent < conn.allowed_until):
                self.cond.wait(0.05)

    def sent(self, conn, size):
        with self.cond:
            conn.sent += size
            self.cond.notify_all()

    def wait_sent(self, conn, at_least, timeout):
        with self.cond:
            return self.cond.wait_for(lambda: conn.sent >= at_least or conn.closed, timeout)


class Conn:
    def __init__(self):
        self.sent = 0
        self.allowed_until = None
        self.closed = False
        self.sockets = ()

    def cut(self):
        """Cuts the connection both ways, as a failed link would."""
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class GateRelay:
    """Listens on a free loopback port and relays each connection to
    target_port (nginx)."""

    def __init__(self, target_port, gates):
        self.target_port = target_port
        self.gates = gates
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def latest(self):
        """The connection accepted last (a CLI process uses one at a time)."""
        with self.lock:
            return self.conns[-1] if self.conns else None

    def close(self):
        self.listener.close()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            conn = Conn()
            conn.sockets = (client, upstream)
            with self.lock:
                self.conns.append(conn)
            ends = [2]
            args = (client, upstream, conn, ends)
            threading.Thread(target=self._up, args=args, daemon=True).start()
            threading.Thread(target=self._down, args=args, daemon=True).start()

    def _finish(self, client, upstream, conn, ends):
        with self.lock:
            ends[0] -= 1
            last = ends[0] == 0
        if last:
            conn.closed = True
            client.close()
            upstream.close()
            with self.gates.cond:
                self.gates.cond.notify_all()

    def _up(self, client, upstream, conn, ends):
        try:
            while True:
                data = client.recv(CHUNK)
                if not data:
                    upstream.shutdown(socket.SHUT_WR)
                    return
                self.gates.wait_turn(conn)
                upstream.sendall(data)
                self.gates.sent(conn, len(data))
        except OSError:
            for sock in (client, upstream):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        finally:
            self._finish(client, upstream, conn, ends)

    def _down(self, client, upstream, conn, ends):
        try:
            while True:
                data = upstream.recv(CHUNK)
                if not data:
                    client.shutdown(socket.SHUT_WR)
                    return
                client.sendall(data)
        except OSError:
            for sock in (client, upstream):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        finally:
            self._finish(client, upstream, conn, ends)
