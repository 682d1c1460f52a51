#!/usr/bin/env python3
"""A TCP proxy that adds a fixed round-trip time, for benchmarks against a server on loopback.

    scripts/latency-proxy.py LISTEN_PORT TARGET_PORT RTT_MS

Listens on 127.0.0.1:LISTEN_PORT and forwards to 127.0.0.1:TARGET_PORT. Each chunk is forwarded
RTT_MS/2 after it arrived, in each direction (a delay line, as netem adds on a link: exchanges
in flight overlap, bandwidth is not throttled), and a new connection waits one RTT before it is
opened (the TCP handshake). So every request/response exchange costs RTT_MS more than on
loopback, as it does against a bucket across a network. Runs until killed.
"""
import asyncio
import sys
import time


async def pump(reader, writer, delay):
    queue = asyncio.Queue()

    async def receive():
        while True:
            data = await reader.read(1 << 16)
            await queue.put((time.monotonic() + delay, data))
            if not data:
                return

    async def send():
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    try:
        await asyncio.gather(receive(), send())
    except (ConnectionError, OSError):
        pass


async def main():
    listen, target, rtt_ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    delay = rtt_ms / 2000.0

    async def handle(client_r, client_w):
        await asyncio.sleep(2 * delay)
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pump(client_r, server_w, delay), pump(server_r, client_w, delay))
        for w in (client_w, server_w):
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", listen, backlog=256)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: latency-proxy.py LISTEN_PORT TARGET_PORT RTT_MS")
    asyncio.run(main())
