"""A TCP proxy in front of one Redis node that delays its replication stream.

    python3 lagproxy.py LISTEN_PORT TARGET_PORT LAG_MS

Every connection to 127.0.0.1:LISTEN_PORT is relayed to 127.0.0.1:TARGET_PORT.
A connection that sends `REPLCONF` (a replica syncing from this node) gets
every byte the node sends it LAG_MS later than it arrived, in order, and
when the node's side closes (the node was killed) the bytes not yet due are
dropped: the replica runs LAG_MS behind, so that a failover loses the
master's last LAG_MS of writes by construction, not by chance. Other connections (the service,
the sentinels) are relayed without delay. Stops on SIGTERM.
"""

import asyncio
import signal
import sys
import time


async def relay_lagged(reader, writer, state, lag):
    """Node to client: once the client is a replica, each chunk waits until
    `lag` seconds after it arrived."""
    queue = asyncio.Queue()

    async def deliver():
        try:
            while True:
                due, chunk = await queue.get()
                if chunk is None:
                    break
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    task = asyncio.create_task(deliver())
    try:
        while chunk := await reader.read(65536):
            due = time.monotonic() + (lag if state["replica"] else 0)
            await queue.put((due, chunk))
    except ConnectionError:
        pass
    if state["replica"]:
        # The node is gone: what it sent within the lag never reaches the
        # replica, as if still on the wire when the node died.
        task.cancel()
        writer.close()
    else:
        await queue.put((0, None))
    await asyncio.gather(task, return_exceptions=True)


async def upstream_watch(reader, writer, state):
    """Client to node, watching for the replication handshake."""
    try:
        while chunk := await reader.read(65536):
            if b"REPLCONF" in chunk.upper():
                state["replica"] = True
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main(listen, target, lag):
    async def handle(client_reader, client_writer):
        try:
            node_reader, node_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_writer.close()
            return
        state = {"replica": False}
        try:
            await asyncio.gather(
                upstream_watch(client_reader, node_writer, state),
                relay_lagged(node_reader, client_writer, state, lag),
            )
        except (asyncio.CancelledError, OSError):
            pass  # a node killed, or the proxy stopping

    server = await asyncio.start_server(handle, "127.0.0.1", listen, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) / 1000))
