"""A round-robin TCP front for ``agentmesh up --replicas``: one port, several replicas.

    python -m agentmesh.shared.local.front --listen 127.0.0.1:8080 \\
        --backend 127.0.0.1:41001 --backend 127.0.0.1:41002

Each accepted connection goes to the next backend in turn (one that refuses the
connection is skipped for this one); bytes are copied both ways until either side closes.
It is for trying replicas on one machine, not a load balancer: no health checks, no
PROXY protocol, so behind it every client's address is the front's (127.0.0.1).
Each connection is logged as ``connection N -> host:port, X bytes back``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import signal

logger = logging.getLogger("agentmesh.front")


def _address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    copied = 0
    try:
        while data := await reader.read(65536):
            writer.write(data)
            copied += len(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.write_eof() if writer.can_write_eof() else writer.close()
    return copied


class Front:
    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self._turn = itertools.count()

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        number = next(self._turn)
        start = number % len(self.backends)
        order = self.backends[start:] + self.backends[:start]
        for host, port in order:
            try:
                upstream_r, upstream_w = await asyncio.open_connection(host, port)
                break
            except OSError:
                continue
        else:
            logger.warning("connection %d: no backend accepted it", number)
            client_w.close()
            return
        try:
            _, back = await asyncio.gather(_pipe(client_r, upstream_w), _pipe(upstream_r, client_w))
            logger.info("connection %d -> %s:%d, %d bytes back", number, host, port, back)
        finally:
            for writer in (upstream_w, client_w):
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()


async def serve(listen: tuple[str, int], backends: list[tuple[str, int]]) -> None:
    front = Front(backends)
    server = await asyncio.start_server(front.handle, *listen, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    logger.info("front on %s:%d for %s", *listen, ", ".join(f"{h}:{p}" for h, p in backends))
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, type=_address)
    parser.add_argument("--backend", required=True, action="append", type=_address)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    asyncio.run(serve(args.listen, args.backend))


if __name__ == "__main__":
    main()
