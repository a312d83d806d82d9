#!/usr/bin/env python3
"""Many-socket clients for bench/abuse.sh: Python standard library only (asyncio).

    abuse_client.py sse  --port P --n N --key KEY --ready F --release F --out F [--hold-max S]
    abuse_client.py idle --port P --n N --key KEY --ready F --release F --out F [--hold-max S]
    abuse_client.py slow --mode loris|post --port P --n N --key KEY --ready F --out F
                         [--interval S] [--observe S]

Every socket goes to 127.0.0.1 only.

sse   opens N `GET /mcp` SSE streams (API key), waits until every stream has its response
      head (or --timeout), writes a JSON summary to --ready, then holds the streams open
      (reading the keep-alive comments) until the file --release exists or --hold-max
      seconds pass; writes the final JSON to --out and closes everything.
idle  opens N keep-alive connections, each sends one complete `GET /mcp` and reads the whole
      response, then stays idle; same ready / release / out protocol. With --reconnect a
      connection the gateway closes is replaced by a new one (same request, then idle), so
      N stay open while held; the JSON counts the reconnects and how long each connection
      sat idle before the gateway closed it.
slow  loris: each socket sends one byte of a request head every --interval seconds;
      post:  each socket sends a complete `POST /slow` head with `content-length: 1000000`
             and then one body byte every --interval seconds.
      Writes --ready once every socket is connected, then watches for at most --observe
      seconds (or until the gateway has closed every socket) and writes to --out: how many
      the gateway closed and after how long, what it answered first, how many bytes each
      had sent.

Nothing here asserts a timing; the JSON reports what happened.
"""

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter

HOST = "127.0.0.1"


def quantiles(values):
    if not values:
        return None
    v = sorted(values)

    def q(p):
        return round(v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))], 3)

    return {"min": round(v[0], 3), "p50": q(0.5), "p99": q(0.99), "max": round(v[-1], 3)}


def error_name(e: BaseException) -> str:
    if isinstance(e, asyncio.TimeoutError):
        return "timeout"
    if isinstance(e, OSError) and e.errno is not None:
        return f"{type(e).__name__}({os.strerror(e.errno)})"
    return type(e).__name__


def write_json(path: str, data) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


async def wait_release(release: str, hold_max: float) -> str:
    deadline = time.monotonic() + hold_max
    while time.monotonic() < deadline:
        if os.path.exists(release):
            return "released"
        await asyncio.sleep(0.2)
    return "hold-max reached"


class Held:
    """An open connection we keep reading from until it closes."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.ready_at = time.monotonic()
        self.bytes = 0
        self.keepalives = 0
        self.keepalives_at_hold = 0
        self.closed_at = None
        self.close_reason = None
        self.task = asyncio.ensure_future(self.drain())

    async def drain(self):
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    self.close_reason = "eof"
                    break
                self.bytes += len(data)
                self.keepalives += data.count(b": keep-alive")
        except (ConnectionError, OSError) as e:
            self.close_reason = error_name(e)
        self.closed_at = time.monotonic()

    def close(self):
        self.task.cancel()
        try:
            self.writer.close()
        except Exception:
            pass


def get_request(port: int, key: str, accept: str) -> bytes:
    return (
        f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Accept: {accept}\r\n\r\n"
    ).encode()


class Pool:
    """N slots, each one connection that sent one request and got its answer (head, or the
    whole response), then is held open. With --reconnect a slot whose connection the peer
    closes opens a new one, so that N stay open for as long as we hold."""

    def __init__(self, args, request: bytes, want_body: bool, check):
        self.args = args
        self.request = request
        self.want_body = want_body
        self.check = check
        self.sem = asyncio.Semaphore(args.parallel)
        self.errors, self.statuses, self.times = Counter(), Counter(), []
        self.all = []
        self.first_ok = 0
        self.first_done = 0
        self.all_first_done = asyncio.Event()
        self.reconnects = 0
        self.stopping = False

    async def open_one(self):
        args = self.args
        t0 = time.monotonic()
        async with self.sem:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(HOST, args.port, limit=1 << 16), args.timeout
                )
            except Exception as e:  # noqa: BLE001 — every failure is counted by name
                self.errors["connect: " + error_name(e)] += 1
                return None
            writer.write(self.request)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), args.timeout)
        except Exception as e:  # noqa: BLE001
            self.errors["head: " + error_name(e)] += 1
            writer.close()
            return None
        self.times.append(time.monotonic() - t0)
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)[1] if " " in lines[0] else lines[0]
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        self.statuses[status] += 1
        if not self.check(status, headers):
            self.errors[f"unexpected answer {status} {headers.get('content-type', '')}"] += 1
            writer.close()
            return None
        if self.want_body:
            try:
                length = int(headers.get("content-length", "0"))
                await asyncio.wait_for(reader.readexactly(length), args.timeout)
            except Exception as e:  # noqa: BLE001
                self.errors["body: " + error_name(e)] += 1
                writer.close()
                return None
        held = Held(reader, writer)
        self.all.append(held)
        return held

    async def slot(self):
        held = await self.open_one()
        self.first_ok += held is not None
        self.first_done += 1
        if self.first_done == self.args.n:
            self.all_first_done.set()
        while held is not None and self.args.reconnect and not self.stopping:
            await asyncio.wait({held.task})
            if self.stopping:
                return
            held = await self.open_one()
            self.reconnects += held is not None

    async def open_all(self):
        started = time.monotonic()
        self.slots = [asyncio.ensure_future(self.slot()) for _ in range(self.args.n)]
        await self.all_first_done.wait()
        self.ready_at = time.monotonic()
        return {
            "requested": self.args.n,
            "ok": self.first_ok,
            "errors": dict(self.errors),
            "statuses": dict(self.statuses),
            "open_seconds": round(self.ready_at - started, 2),
            "head_seconds": quantiles(self.times),
        }

    async def hold_and_close(self, summary):
        args = self.args
        write_json(args.ready, summary)
        for h in self.all:
            h.keepalives_at_hold = h.keepalives
        how = await wait_release(args.release, args.hold_max)
        self.stopping = True
        held_for = time.monotonic() - self.ready_at
        closed = [h for h in self.all if h.closed_at is not None]
        summary.update(
            {
                "held_seconds": round(held_for, 1),
                "hold_end": how,
                "reconnect": args.reconnect,
                "reconnects": self.reconnects,
                "errors_total": dict(self.errors),
                "closed_by_peer_while_held": len(closed),
                "close_reasons": dict(Counter(h.close_reason for h in closed)),
                "idle_before_close_seconds": quantiles([h.closed_at - h.ready_at for h in closed]),
                "still_open_at_release": sum(1 for h in self.all if h.closed_at is None),
                "keepalives_received": sum(h.keepalives for h in self.all),
                "streams_with_a_keepalive": sum(1 for h in self.all if h.keepalives > 0),
                # After --ready was written (every stream open), until the release.
                "streams_with_a_keepalive_while_held": sum(
                    1 for h in self.all if h.keepalives > h.keepalives_at_hold
                ),
            }
        )
        for task in self.slots:
            task.cancel()
        for h in self.all:
            h.close()
        await asyncio.sleep(0.5)
        write_json(args.out, summary)


async def cmd_sse(args):
    pool = Pool(
        args,
        get_request(args.port, args.key, "text/event-stream"),
        want_body=False,
        check=lambda s, h: s == "200" and h.get("content-type", "").startswith("text/event-stream"),
    )
    await pool.hold_and_close(await pool.open_all())


async def cmd_idle(args):
    pool = Pool(
        args,
        get_request(args.port, args.key, "application/json, text/event-stream"),
        want_body=True,
        check=lambda s, h: s == "200",
    )
    await pool.hold_and_close(await pool.open_all())


class Slow:
    def __init__(self, reader, writer, connected_at):
        self.reader = reader
        self.writer = writer
        self.connected_at = connected_at
        self.sent = 0
        self.first_line = None
        self.answered_after = None
        self.closed_after = None
        self.close_reason = None
        self.closed = asyncio.Event()
        self.task = asyncio.ensure_future(self.watch())

    def mark_closed(self, reason):
        if self.closed_after is None:
            self.closed_after = time.monotonic() - self.connected_at
            self.close_reason = reason
        self.closed.set()

    async def watch(self):
        received = b""
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    self.mark_closed("eof")
                    return
                if self.first_line is None:
                    received += data
                    if b"\r\n" in received or len(received) > 200:
                        self.first_line = received.split(b"\r\n", 1)[0][:80].decode("latin-1")
                        self.answered_after = time.monotonic() - self.connected_at
        except (ConnectionError, OSError) as e:
            self.mark_closed("read " + error_name(e))


async def cmd_slow(args):
    if args.mode == "loris":
        head = (
            f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
            f"Authorization: Bearer {args.key}\r\nAccept: application/json\r\n"
            f"User-Agent: slow-loris-bench\r\n\r\n"
        ).encode()
        upfront, trickle = b"", head
    else:
        upfront = (
            f"POST /slow HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
            f"Authorization: Bearer {args.key}\r\nContent-Type: application/json\r\n"
            f"Accept: application/json, text/event-stream\r\n"
            f"Content-Length: {args.content_length}\r\n\r\n"
        ).encode()
        trickle = b"[" + b" " * (args.content_length - 1)
    errors = Counter()
    socks = []
    sem = asyncio.Semaphore(args.parallel)

    async def connect():
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(HOST, args.port), args.timeout
                )
            except Exception as e:  # noqa: BLE001
                errors["connect: " + error_name(e)] += 1
                return
        s = Slow(reader, writer, time.monotonic())
        if upfront:
            writer.write(upfront)
        socks.append(s)

    await asyncio.gather(*(connect() for _ in range(args.n)))
    write_json(args.ready, {"connected": len(socks), "errors": dict(errors)})
    started = time.monotonic()
    deadline = started + args.observe

    async def trickle_one(s: Slow):
        i = 0
        while time.monotonic() < deadline and not s.closed.is_set() and i < len(trickle):
            try:
                s.writer.write(trickle[i : i + 1])
                await s.writer.drain()
                s.sent += 1
                i += 1
            except (ConnectionError, OSError) as e:
                s.mark_closed("write " + error_name(e))
                return
            wait = min(args.interval, max(0.0, deadline - time.monotonic()))
            try:
                await asyncio.wait_for(s.closed.wait(), wait)
            except asyncio.TimeoutError:
                pass
        if not s.closed.is_set():
            try:
                await asyncio.wait_for(s.closed.wait(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                pass

    await asyncio.gather(*(trickle_one(s) for s in socks))
    closed = [s for s in socks if s.closed_after is not None]
    answered = [s for s in socks if s.first_line is not None]
    result = {
        "mode": args.mode,
        "requested": args.n,
        "connected": len(socks),
        "connect_errors": dict(errors),
        "interval_seconds": args.interval,
        "observed_seconds": round(time.monotonic() - started, 1),
        "observe_max_seconds": args.observe,
        "closed_by_gateway": len(closed),
        "still_open_at_end": len(socks) - len(closed),
        "close_reasons": dict(Counter(s.close_reason for s in closed)),
        "closed_after_seconds": quantiles([s.closed_after for s in closed]),
        "answered": len(answered),
        "answers": dict(Counter(s.first_line for s in answered)),
        "answered_after_seconds": quantiles([s.answered_after for s in answered]),
        "bytes_sent_by_close": quantiles([s.sent for s in closed]),
        "bytes_sent_open": quantiles([s.sent for s in socks if s.closed_after is None]),
    }
    for s in socks:
        s.task.cancel()
        s.writer.close()
    await asyncio.sleep(0.2)
    write_json(args.out, result)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["sse", "idle", "slow"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ready", required=True)
    parser.add_argument("--release", default="/nonexistent")
    parser.add_argument("--out", required=True)
    parser.add_argument("--hold-max", type=float, default=120.0)
    parser.add_argument("--timeout", type=float, default=40.0, help="per connect / head")
    parser.add_argument("--parallel", type=int, default=200, help="connects in flight")
    parser.add_argument("--mode", choices=["loris", "post"], default="loris")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--observe", type=float, default=40.0)
    parser.add_argument("--content-length", type=int, default=1_000_000)
    parser.add_argument("--reconnect", action="store_true", help="idle/sse: reopen closed connections")
    args = parser.parse_args()
    command = {"sse": cmd_sse, "idle": cmd_idle, "slow": cmd_slow}[args.command]
    try:
        asyncio.run(command(args))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
