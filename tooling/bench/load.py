"""A load of concurrent HTTP clients, run as a second process by `bench api`.

    python -m tooling.bench.load URL CLIENTS REQUESTS_EACH  -> JSON latencies (ms)

One thread, asyncio, raw keep-alive connections: client threads would fight
over the GIL and add their own scheduling delays to the measured tail.
"""

import asyncio
import json
import sys
import time
from urllib.parse import urlsplit


async def client(host, port, path, count, out):
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\n\r\n".encode()
    for _ in range(count):
        started = time.perf_counter()
        writer.write(request)
        status = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await reader.readexactly(length)
        out.append((time.perf_counter() - started) * 1000)
        if b" 200 " not in status:
            raise RuntimeError(f"{path} answered {status.decode().strip()}")
    writer.close()


async def main(url, clients, each):
    parts = urlsplit(url)
    latencies = []
    started = time.perf_counter()
    await asyncio.gather(*(client(parts.hostname, parts.port, parts.path, each, latencies) for _ in range(clients)))
    print(json.dumps({"latencies": latencies, "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
