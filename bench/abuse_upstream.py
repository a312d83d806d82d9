#!/usr/bin/env python3
"""Upstream and JWKS server for bench/abuse.sh: Python standard library only (asyncio).

    abuse_upstream.py --port PORT [--keepalive SECONDS] [--jwks FILE]

Listens on 127.0.0.1:PORT only and answers HTTP/1.1 (keep-alive):

  GET  /mcp...        200 `content-type: text/event-stream`, chunked, then a `: keep-alive`
                      comment every --keepalive seconds (default 15) until the peer closes
  POST /...           reads the whole body (Content-Length) before answering 200 — like an
                      MCP server parsing a JSON-RPC request — so a body that trickles in
                      keeps the request waiting here
  GET  /jwks/NAME     the JWKS file (--jwks), counting hits per NAME
  GET  /stats         JSON counters (SSE streams open and total, POST bodies, JWKS hits)

Nothing here is tuned for speed: the wrk scenarios use nginx as their upstream.
"""

import argparse
import asyncio
import json
import sys

STATS = {
    "sse_open": 0,
    "sse_total": 0,
    "sse_keepalives_sent": 0,
    "post_reading": 0,
    "post_done": 0,
    "post_aborted": 0,
    "jwks_hits": {},
    "requests": 0,
}


def response(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def sse(reader, writer, keepalive: float) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    await writer.drain()
    STATS["sse_open"] += 1
    STATS["sse_total"] += 1
    # The peer (the gateway) closing the connection is what ends the stream.
    eof = asyncio.ensure_future(reader.read(1))
    try:
        while True:
            done, _ = await asyncio.wait({eof}, timeout=keepalive)
            if done:
                break
            writer.write(chunk(b": keep-alive\n\n"))
            await writer.drain()
            STATS["sse_keepalives_sent"] += 1
    finally:
        eof.cancel()
        STATS["sse_open"] -= 1


async def handle(reader, writer, args, jwks: bytes) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            STATS["requests"] += 1
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            if method == "GET" and target.startswith("/mcp"):
                await sse(reader, writer, args.keepalive)
                return
            if method == "POST":
                length = int(headers.get("content-length", "0"))
                STATS["post_reading"] += 1
                try:
                    await reader.readexactly(length)
                except (asyncio.IncompleteReadError, ConnectionError):
                    STATS["post_aborted"] += 1
                    return
                finally:
                    STATS["post_reading"] -= 1
                STATS["post_done"] += 1
                writer.write(response("200 OK", b'{"jsonrpc":"2.0","id":1,"result":{}}'))
            elif method == "GET" and target.startswith("/jwks/") and jwks:
                name = target[len("/jwks/"):]
                STATS["jwks_hits"][name] = STATS["jwks_hits"].get(name, 0) + 1
                writer.write(response("200 OK", jwks))
            elif method == "GET" and target == "/stats":
                writer.write(response("200 OK", json.dumps(STATS).encode()))
            else:
                writer.write(response("404 Not Found", b'{"error":"not found"}'))
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--keepalive", type=float, default=15.0)
    parser.add_argument("--jwks", default="")
    args = parser.parse_args()
    jwks = open(args.jwks, "rb").read() if args.jwks else b""
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args, jwks), "127.0.0.1", args.port, backlog=4096
    )
    print(f"abuse_upstream listening on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
