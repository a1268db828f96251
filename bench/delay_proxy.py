#!/usr/bin/env python3
"""A TCP proxy that delays every byte by a fixed time in each direction.

    delay_proxy.py LISTEN_PORT TARGET_HOST:TARGET_PORT DELAY_MS

For bench/latency.sh: `tc netem` is not available in this kernel, so the
added network delay to Redis and RGW is made in user space. Each direction
of each connection has a reader thread, which stamps what it receives with
the time it is due (arrival + DELAY_MS), and a writer thread, which sends it
no earlier than that (time.sleep, not an event loop: asyncio's epoll
timeouts round up to whole milliseconds). Order is kept; bandwidth is not
limited. Listens on 127.0.0.1 only; runs until killed (SIGTERM).
"""

import queue
import socket
import sys
import threading
import time


def pump(source, sink, delay):
    due = queue.SimpleQueue()

    def writer():
        while True:
            at, data = due.get()
            if data is None:
                break
            wait = at - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            try:
                sink.sendall(data)
            except OSError:
                break
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    while True:
        try:
            data = source.recv(1 << 16)
        except OSError:
            data = b""
        due.put((time.perf_counter() + delay, data or None))
        if not data:
            break
    thread.join()


def serve(client, target, delay):
    try:
        upstream = socket.create_connection(target)
    except OSError:
        client.close()
        return
    for sock in (client, upstream):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = threading.Thread(target=pump, args=(upstream, client, delay), daemon=True)
    back.start()
    pump(client, upstream, delay)
    back.join()
    client.close()
    upstream.close()


def main():
    port, target, delay_ms = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    host, target_port = target.rsplit(":", 1)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    while True:
        client, _ = listener.accept()
        threading.Thread(
            target=serve,
            args=(client, (host, int(target_port)), delay_ms / 1000),
            daemon=True,
        ).start()


if __name__ == "__main__":
    main()
