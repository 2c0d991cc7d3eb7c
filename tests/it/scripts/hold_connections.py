"""Holds idle connections to a server, for tests/it/connections.rs.

Usage: hold_connections.py HOST PORT COUNT

Opens COUNT connections: every second one sends one keep-alive `GET /healthz` and reads the
answer, the others send nothing. Prints `open N` (N connections made, the server possibly having
closed some already) and keeps them until standard input closes; then prints `closed K`, the number
the server had closed by then, and exits. Standard library only.
"""

import asyncio
import sys


async def connect(host, port, ask):
    reader, writer = await asyncio.open_connection(host, port)
    if ask:
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        await writer.drain()
        head = await reader.read(512)
        if head and not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"unexpected answer: {head[:80]!r}")
    return reader, writer


async def closed_by_server(reader):
    try:
        return await asyncio.wait_for(reader.read(1), 0.05) == b""
    except asyncio.TimeoutError:
        return False
    except ConnectionError:
        return True


async def main(host, port, count):
    held = []
    for i in range(count):
        held.append(await connect(host, port, i % 2 == 0))
    print(f"open {len(held)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    closed = sum(await asyncio.gather(*(closed_by_server(r) for r, _ in held)))
    print(f"closed {closed}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
