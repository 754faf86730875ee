#!/usr/bin/env python
"""Janus HTTP transport benchmark: request round trips and event delivery by long poll.

    python bench/http_transport.py --requests 2000 --events 500

Against an in-process signalling node (no relay worker: the requests measured need none) on a
free loopback port, through the real listener, with one aiohttp client (keep-alive):

- ``POST /janus/<session>`` ``keepalive`` round trips, one after another;
- a plugin ``message`` (``list``) POSTed while a long poll waits on the session: from the POST
  to the event's arrival on the waiting GET (the path an HTTP client's events take);
- the same event over a WebSocket, for comparison.

Printed: p50/p95/p99 in ms and requests per second; then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import aiohttp

from shared.settings import Settings
from signaling.server import SignalingServer


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)
    return {"p50_ms": pick(0.50), "p95_ms": pick(0.95), "p99_ms": pick(0.99),
            "mean_ms": round(statistics.fmean(ordered) * 1000, 3)}


async def main(requests: int, events: int) -> dict[str, Any]:
    server = SignalingServer(Settings(port=0, long_poll_wait=30))
    await server.start()
    base = f"http://127.0.0.1:{server.port}/janus"
    try:
        async with aiohttp.ClientSession() as client:
            async def post(path: str, body: dict[str, Any]) -> Any:
                async with client.post(base + path, data=json.dumps(body)) as answer:
                    return await answer.json()

            sid = (await post("", {"janus": "create", "transaction": "c"}))["data"]["id"]
            handle = (await post(f"/{sid}", {"janus": "attach", "plugin": "janus.plugin.videocall",
                                             "transaction": "a"}))["data"]["id"]
            round_trips = []
            started = time.perf_counter()
            for i in range(requests):
                t0 = time.perf_counter()
                await post(f"/{sid}", {"janus": "keepalive", "transaction": f"k{i}"})
                round_trips.append(time.perf_counter() - t0)
            rate = requests / (time.perf_counter() - started)

            async with aiohttp.ClientSession() as poller:
                delivery = []
                for i in range(events):
                    async def poll() -> float:
                        async with poller.get(f"{base}/{sid}?maxev=1") as answer:
                            await answer.read()
                            return time.perf_counter()
                    waiting = asyncio.create_task(poll())
                    await asyncio.sleep(0.002)  # the GET is waiting
                    t0 = time.perf_counter()
                    await post(f"/{sid}/{handle}", {"janus": "message", "body": {"request": "list"},
                                                    "transaction": f"m{i}"})
                    delivery.append(await waiting - t0)

            ws_delivery = []
            async with client.ws_connect(f"ws://127.0.0.1:{server.port}/", protocols=["janus-protocol"]) as ws:
                await ws.send_str(json.dumps({"janus": "create", "transaction": "c"}))
                wsid = json.loads((await ws.receive()).data)["data"]["id"]
                await ws.send_str(json.dumps({"janus": "attach", "session_id": wsid, "transaction": "a",
                                              "plugin": "janus.plugin.videocall"}))
                whandle = json.loads((await ws.receive()).data)["data"]["id"]
                for i in range(events):
                    t0 = time.perf_counter()
                    await ws.send_str(json.dumps({"janus": "message", "session_id": wsid, "handle_id": whandle,
                                                  "transaction": f"m{i}", "body": {"request": "list"}}))
                    while json.loads((await ws.receive()).data)["janus"] != "event":
                        pass
                    ws_delivery.append(time.perf_counter() - t0)
    finally:
        await server.close()
    return {"keepalive_round_trip": summary(round_trips), "keepalive_per_second": round(rate),
            "event_by_long_poll": summary(delivery), "event_by_websocket": summary(ws_delivery)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--events", type=int, default=500)
    args = parser.parse_args()
    result = asyncio.run(main(args.requests, args.events))
    for name, value in result.items():
        print(f"{name:24} {value}")
    print(json.dumps(result))
