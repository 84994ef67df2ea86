#!/usr/bin/env python3
"""The load of bench/autoscale.sh: closed-loop clients ramped from 0 to CLIENTS over
RAMP seconds, each sending keep-alive GETs through the router until HOLD seconds from
the start, while the service's ready instances are read from the API every 100 ms.

Usage: autoscale.py ROUTER_PORT HOST API_URL TOKEN SERVICE CLIENTS RAMP HOLD OUT.json

Writes OUT.json: {"clients": [[t, n]...], "ready": [[t, n]...], "requests": n,
"failed": n, "errors": [first few]}, t in seconds from the first client's start. Only
127.0.0.1 is contacted. Every loop is bounded by HOLD (and a socket timeout of 30 s).
"""
import asyncio
import json
import sys
import time
import urllib.request


async def client(port, host, t_end, stats, started):
    req = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    reader = writer = None
    started.append(time.monotonic())
    while time.monotonic() < t_end:
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), 30)
            writer.write(req)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            status = int(head.split(b" ", 2)[1])
            length = 0
            close = False
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v.strip())
                if k.strip().lower() == b"connection" and v.strip().lower() == b"close":
                    close = True
            if length:
                await asyncio.wait_for(reader.readexactly(length), 30)
            stats["requests"] += 1
            if status != 200:
                stats["failed"] += 1
                if len(stats["errors"]) < 5:
                    stats["errors"].append(f"status {status}")
            if close:
                writer.close()
                writer = None
        except Exception as e:  # a failed request: counted, the connection renewed
            stats["requests"] += 1
            stats["failed"] += 1
            if len(stats["errors"]) < 5:
                stats["errors"].append(repr(e))
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.05)
    if writer is not None:
        writer.close()


def ready_count(api, token, service):
    r = urllib.request.Request(f"{api}/v1/services/{service}",
                               headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(r, timeout=5) as resp:
        return json.load(resp)["instances"]["ready"]


async def poll(api, token, service, t0, t_end, ready):
    loop = asyncio.get_running_loop()
    while time.monotonic() < t_end:
        try:
            n = await loop.run_in_executor(None, ready_count, api, token, service)
            ready.append([round(time.monotonic() - t0, 3), n])
        except Exception:
            pass
        await asyncio.sleep(0.1)


async def main():
    port, host, api, token, service = sys.argv[1:6]
    clients, ramp, hold = int(sys.argv[6]), float(sys.argv[7]), float(sys.argv[8])
    out = sys.argv[9]
    stats = {"requests": 0, "failed": 0, "errors": []}
    ready, started = [], []
    t0 = time.monotonic()
    t_end = t0 + hold
    tasks = [asyncio.create_task(poll(api, token, service, t0, t_end, ready))]
    for i in range(clients):
        # Client i starts at i * ramp / clients seconds.
        delay = t0 + i * ramp / clients - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(client(int(port), host, t_end, stats, started)))
    await asyncio.gather(*tasks)
    steps = [[round(t - t0, 3), i + 1] for i, t in enumerate(sorted(started))]
    with open(out, "w") as f:
        json.dump({"clients": steps, "ready": ready, **stats}, f)


asyncio.run(main())
