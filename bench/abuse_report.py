#!/usr/bin/env python3
"""Turns a bench/abuse.sh results directory into the Markdown section
`## Abuse and load (bench/abuse.sh)`.

    abuse_report.py RESULTS_DIR [BENCHMARKS.md]

Prints the section. With a file, also writes it there: the section (from its heading to the
next `## ` heading or the end of the file) is replaced if present, appended if absent;
nothing else in the file changes. Reports what was measured; asserts nothing.
"""

import json
import re
import sys
from pathlib import Path

HEADING = "## Abuse and load (bench/abuse.sh)"
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def parse_wrk(path: Path) -> dict:
    text = path.read_text()
    out = {"text": text}
    for key, pattern in {
        "rps": r"^Requests/sec:\s+([\d.]+)",
        "requests": r"^\s+(\d+) requests in",
        "non2xx": r"Non-2xx or 3xx responses:\s+(\d+)",
    }.items():
        m = re.search(pattern, text, re.M)
        out[key] = float(m.group(1)) if m else (0 if key == "non2xx" else None)
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}(?:\.000)?%\s+(\S+)", text, re.M)
        out["p" + q] = ms(m.group(1)) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()))) if m else {}
    m = re.search(r"^statuses: (.*)$", text, re.M)
    out["statuses"] = dict(p.split("=") for p in m.group(1).split()) if m else None
    return out


def n(x, digits=0):
    if x is None:
        return "—"
    return f"{x:,.{digits}f}"


def fmt_ms(v):
    if v is None:
        return "—"
    return f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms" if v < 1000 else f"{v / 1000:.2f} s"


def mib(kb):
    return "—" if kb is None else f"{int(kb) / 1024:.1f} MiB"


def quant(q, unit="s"):
    if not q:
        return "—"
    return f"{q['min']:g} / {q['p50']:g} / {q['max']:g} {unit}".strip()


def errors_text(w):
    parts = []
    if w.get("non2xx"):
        parts.append(f"{int(w['non2xx']):,} non-2xx")
    errs = {k: v for k, v in w.get("socket_errors", {}).items() if v}
    if errs:
        parts.append("socket errors " + ", ".join(f"{k} {v:,}" for k, v in errs.items()))
    return "; ".join(parts) or "none"


def statuses_text(w):
    s = w.get("statuses")
    if not s:
        return "—"
    return ", ".join(f"{int(c):,}× {code}" for code, c in sorted(s.items()))


def gateway_log_summary(path: Path):
    """(lines, {message: count}) of a gateway's JSON log (level warn and above)."""
    if not path.exists():
        return 0, {}
    counts = {}
    lines = 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
            fields = dict(event.get("fields", {}))
            fields.update({k: v for k, v in event.items() if k != "fields"})
            if "key" in fields:
                continue  # a start-up configuration diagnostic, not something the load caused
            lines += 1
            text = str(fields.get("message", ""))
            if len(text) > 90:
                text = text[:90] + "…"
            msg = f"{fields.get('level', '?')} {text}".strip()
            extra = {k: v for k, v in fields.items() if k in ("limit", "error", "reason", "key", "issuer")}
            if extra:
                msg += " (" + ", ".join(f"{k}={v}" for k, v in extra.items()) + ")"
        except (json.JSONDecodeError, AttributeError):
            lines += 1
            msg = line[:160]
        counts[msg] = counts.get(msg, 0) + 1
    return lines, counts


def build(results: Path) -> str:
    m = {}
    for line in (results / "metrics.env").read_text().splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            m[k] = v

    def num(key):
        v = m.get(key)
        try:
            return float(v)
        except (TypeError, ValueError):
            return None

    def load(name):
        p = results / name
        return json.loads(p.read_text()) if p.exists() else {}

    clk = num("clk_tck") or 100.0
    wrks = {p.stem: parse_wrk(p) for p in results.glob("*.wrk")}
    L = []
    L.append(HEADING)
    L.append("")
    L.append(
        "Written by `bench/abuse.sh` (edits here are overwritten when it runs with `BENCH_OUT`). "
        "Measurement only: no timing is asserted. Every process runs on 127.0.0.1 on this machine; "
        "each scenario starts its own gateway (`workers` default, `max_connections = 20000`, "
        "`max_connections_per_ip = 0` since every client is 127.0.0.1, `[log] level = \"warn\"`, "
        "all other limits at their defaults: `header_read_timeout` 10 s, `idle_timeout` 60 s, "
        "`response_timeout` 60 s — except scenario 2's, see there)."
    )
    L.append("")
    L.append(
        f"Recorded {m.get('date')} at commit `{m.get('commit')}`. Machine: **{m.get('nproc')} cores** "
        f"({m.get('cpu')}), {m.get('mem')} RAM, {m.get('kernel')}; {m.get('wrk')}. "
        f"wrk runs: `-t{m.get('threads')} -c{m.get('connections')} -d{m.get('duration')} --latency`. "
        + (
            f"**CPU busy before the start (other load on the machine): {m.get('quiet_busy_pct')}% — "
            "throughput and latency figures are low and noisy.** "
            if (num("quiet_busy_pct") or 0) > 10
            else f"CPU busy before the start (other load): {m.get('quiet_busy_pct')}%. "
        )
        + 
        "wrk, the upstreams, the Python clients and the gateway share the same cores. "
        "Run: `BENCH_OUT=BENCHMARKS.md bench/abuse.sh` (knobs in the script's header)."
    )
    L.append("")

    intro_end = len(L)
    S = []  # summary rows: (scenario, key figures)

    # ---- 1
    s1 = load("s1-sse.json")
    rounds = int(num("sse_rounds") or 1)
    later = {r: load(f"s1r{r}-sse.json") for r in range(2, rounds + 1)}
    up_held = load("s1-upstream-held.json")
    up_closed = load("s1-upstream-closed.json")
    sse_n, sse_req = int(num("sse_n") or 0), int(num("sse_requested") or 0)
    ok = s1.get("ok", 0)
    rss_per = None
    if ok and num("s1_held_rss_kb") is not None:
        rss_per = (num("s1_held_rss_kb") - num("s1_before_rss_kb")) / ok
    fd_per = (num("s1_held_fds") - num("s1_before_fds")) / ok if ok else None
    scaled = ""
    if sse_n < sse_req:
        scaled = (
            f" **Scaled down from {sse_req:,}**: `ulimit -n` could not be raised to "
            f"{m.get('nofile_wanted')} (hard limit {m.get('nofile_hard')}), and the gateway needs two "
            f"descriptors per stream (client side + upstream side), so {sse_n:,} is what fits in "
            f"{m.get('nofile')} with 256 to spare."
        )
    L.append("### 1. Idle SSE streams")
    L.append("")
    L.append(
        f"{sse_n:,} concurrent `GET /mcp` streams (`Accept: text/event-stream`, API key) from one "
        "Python asyncio client, through the gateway to a Python asyncio upstream that answers "
        f"`content-type: text/event-stream` and then sends `: keep-alive` every 15 s.{scaled} "
        f"All {ok:,} of {s1.get('requested', 0):,} got a `200 text/event-stream` head "
        f"(errors: {s1.get('errors') or 'none'}); opening them took {s1.get('open_seconds')} s "
        f"(connect → head, min / p50 / max: {quant(s1.get('head_seconds'))}). "
        f"The streams were held {s1.get('held_seconds')} s; {s1.get('streams_with_a_keepalive', 0):,} "
        f"streams received at least one keep-alive ({s1.get('keepalives_received', 0):,} in all) and "
        f"{s1.get('closed_by_peer_while_held', 0):,} were closed by the gateway while held."
    )
    L.append("")
    L.append("| Gateway | VmRSS | VmHWM | open fds |")
    L.append("|---|---:|---:|---:|")
    for key, label in (
        ("s1_before", "before (one stream opened and closed)"),
        ("s1_held", f"{ok:,} streams open (+2 s)"),
        ("s1_held_late", f"{ok:,} streams open, after a keep-alive round (+{m.get('sse_hold')} s)"),
        ("s1_closed", "all closed by the client (+3 s)"),
    ) + tuple(
        row
        for r in range(2, rounds + 1)
        for row in (
            (f"s1_round{r}_held", f"round {r}: {later[r].get('ok', 0):,} streams open again (+2 s)"),
            (f"s1_round{r}_closed", f"round {r} closed (+3 s)"),
        )
    ):
        if num(key + "_rss_kb") is None:
            continue
        L.append(f"| {label} | {mib(num(key + '_rss_kb'))} | {mib(num(key + '_hwm_kb'))} | {n(num(key + '_fds'))} |")
    L.append("")
    L.append(
        f"Per stream: **{n(rss_per, 1)} KiB of gateway RSS** and {n(fd_per, 2)} fds "
        f"(held − before, divided by {ok:,}). Gateway CPU to open them: "
        f"{n(((num('s1_held_ticks') or 0) - (num('s1_before_ticks') or 0)) / clk, 2)} s. "
        f"The upstream saw {up_held.get('sse_open', '—')} streams open while held and "
        f"{up_closed.get('sse_open', '—')} three seconds after the client closed its side."
        + "".join(
            f" Round {r}: {d.get('ok', 0):,} of {d.get('requested', 0):,} opened in "
            f"{d.get('open_seconds')} s (errors: {d.get('errors') or 'none'})."
            for r, d in later.items()
        )
    )
    L.append("")

    S.append((
        f"1. {ok:,} idle SSE streams",
        f"{n(rss_per, 1)} KiB RSS and {n(fd_per, 2)} fds per stream; RSS {mib(num('s1_before_rss_kb'))} → "
        f"{mib(num('s1_held_rss_kb'))} held, {mib(num('s1_closed_rss_kb'))} after all closed"
        + "".join(f", {mib(num(f's1_round{r}_closed_rss_kb'))} after round {r}" for r in later)
        + f"; {s1.get('closed_by_peer_while_held', 0):,} dropped while held",
    ))

    # ---- 2 / 3 wrk
    s2 = load("s2-idle.json")
    L.append("### 2 and 3. Normal traffic beside idle, slow-loris and slow-POST connections")
    L.append("")
    L.append(
        "wrk at an API-key route proxied to nginx `return 200` (102-byte body). Scenario 2: alone, "
        f"then beside {m.get('idle_conns')} idle keep-alive connections (each sent one complete "
        "`GET /mcp` with the key, read the whole answer, then stayed silent), on a gateway with "
        "`header_read_timeout = \"60s\"`: with the default 10 s the gateway closes idle HTTP/1.1 "
        "connections after 10 s (probe below), in the middle of the run. Scenario 3, on a gateway "
        f"with default limits: alone, then beside {m.get('loris')} slow-loris sockets, then beside "
        f"{m.get('slowpost')} slow-POST sockets (each set from one client process)."
    )
    L.append("")
    L.append("| wrk run | req/s | p50 | p99 | errors | gateway RSS after | gateway fds after |")
    L.append("|---|---:|---:|---:|---|---:|---:|")
    for key, label in (
        ("s2_base", "2: alone (`header_read_timeout` 60 s)"),
        ("s2_idle", f"2: beside {s2.get('ok', 0):,} idle keep-alive connections (`header_read_timeout` 60 s)"),
        ("s3_base", "3: alone (default limits)"),
        ("s3_loris", f"beside {m.get('loris')} slow-loris sockets"),
        ("s3_post", f"beside {m.get('slowpost')} slow-POST sockets"),
    ):
        w = wrks.get(key)
        if not w:
            continue
        L.append(
            f"| {label} | {n(w['rps'])} | {fmt_ms(w['p50'])} | {fmt_ms(w['p99'])} | {errors_text(w)} | "
            f"{mib(num(key + '_rss_after_kb'))} | {n(num(key + '_fds_after'))} |"
        )
    L.append("")
    idle_rss = None
    if s2.get("ok"):
        idle_rss = (num("s2_idleconns_rss_kb") - num("s2_before_idle_rss_kb")) / s2["ok"]
    L.append(
        f"Idle connections: {s2.get('ok', 0):,} of {s2.get('requested', 0):,} opened "
        f"(errors: {s2.get('errors') or 'none'}) in {s2.get('open_seconds')} s; gateway RSS "
        f"{mib(num('s2_before_idle_rss_kb'))} → {mib(num('s2_idleconns_rss_kb'))} with them open "
        f"({n(idle_rss, 1)} KiB each), fds {n(num('s2_before_idle_fds'))} → {n(num('s2_idleconns_fds'))}. "
        f"While they were held ({s2.get('held_seconds')} s) the gateway closed "
        f"{s2.get('closed_by_peer_while_held', 0):,} of them"
        + (
            f" (after {quant(s2.get('idle_before_close_seconds'))} idle)"
            if s2.get("idle_before_close_seconds")
            else ""
        )
        + "."
    )
    L.append("")
    probe = load("probe-idle.json")
    if probe:
        L.append(
            f"Idle probe, default limits (`header_read_timeout` 10 s, `idle_timeout` 60 s): "
            f"{probe.get('ok', 0):,} keep-alive connections, each after one complete request and "
            f"its answer, watched for {probe.get('held_seconds')} s: the gateway closed "
            f"{probe.get('closed_by_peer_while_held', 0):,} of them, each after "
            f"**{quant(probe.get('idle_before_close_seconds'))}** (min / p50 / max) without a "
            f"request (what the client saw: "
            + (", ".join(f"{k.upper() if k == 'eof' else k} ×{v}" for k, v in probe.get("close_reasons", {}).items()) or "—")
            + f"); {probe.get('still_open_at_release', 0):,} were still open at the end."
        )
        L.append("")

    base, idle = wrks.get("s2_base"), wrks.get("s2_idle")
    if base and idle:
        S.append((
            f"2. wrk beside {s2.get('ok', 0):,} idle keep-alive connections",
            f"{n(base['rps'])} → {n(idle['rps'])} req/s, p99 {fmt_ms(base['p99'])} → {fmt_ms(idle['p99'])}; "
            f"{n(idle_rss, 1)} KiB RSS per idle connection. With default limits the gateway closes an idle "
            f"keep-alive connection after {(probe.get('idle_before_close_seconds') or {}).get('p50', '—')} s "
            "(p50; `header_read_timeout` 10 s, `idle_timeout` 60 s)",
        ))

    # ---- 3 slow sockets
    L.append(
        f"Slow sockets (one byte every {m.get('slow_interval')} s; the watch ends when the gateway "
        "has closed every socket or the window is over):"
    )
    L.append("")
    L.append(
        "| Attack | sockets | watched | closed by the gateway | closed after (min / p50 / max) | "
        "what the gateway answered | bytes sent before the close | still open at the end |"
    )
    L.append("|---|---:|---:|---:|---|---|---|---:|")
    for name, label in (("s3-loris.json", "slow-loris: request head, one byte at a time"),
                        ("s3-post.json", "slow-POST: full head, `content-length: 1000000`, body one byte at a time")):
        d = load(name)
        if not d:
            continue
        answers = ", ".join(f"{c}× `{a}`" for a, c in sorted(d.get("answers", {}).items())) or "nothing"
        if d.get("answered_after_seconds"):
            answers += f" after {quant(d['answered_after_seconds'])}"
        w = wrks.get("s3_loris" if name == "s3-loris.json" else "s3_post")
        S.append((
            f"3{'a' if name == 's3-loris.json' else 'b'}. wrk beside {d.get('connected')} "
            + ("slow-loris sockets" if name == "s3-loris.json" else "slow-POST sockets"),
            (f"{n(w['rps'])} req/s, p99 {fmt_ms(w['p99'])}; " if w else "")
            + f"{d.get('closed_by_gateway')} of {d.get('connected')} closed by the gateway after "
            f"{(d.get('closed_after_seconds') or {}).get('p50', '—')} s (p50), "
            + ("answering " + ", ".join(f"`{a}`" for a in sorted(d.get("answers", {}))) if d.get("answers") else "answering nothing")
            + f"; {d.get('still_open_at_end')} still open after {d.get('observed_seconds')} s",
        ))
        L.append(
            f"| {label} | {d.get('connected')} | {d.get('observed_seconds')} s of {d.get('observe_max_seconds'):g} | "
            f"{d.get('closed_by_gateway')} | {quant(d.get('closed_after_seconds'))} | {answers} | "
            f"{quant(d.get('bytes_sent_by_close'), '')} | {d.get('still_open_at_end')} |"
        )
    L.append("")
    up_during = load("s3b-upstream-during.json")
    up_after = load("s3b-upstream-after.json")
    up_before = load("s3b-upstream-before.json")
    up_late = load("s3b-upstream-late.json")
    if up_during:
        L.append(
            f"Upstream view of the slow-POSTs: {up_during.get('post_reading')} request bodies being read "
            f"right after the wrk run; {up_late.get('post_reading', '—')} still being read "
            f"{m.get('s3_post_late_at', '—')} s after the sockets connected, with "
            f"{up_late.get('post_aborted', 0) - up_before.get('post_aborted', 0)} ended incomplete "
            f"(the gateway closed the upstream connection) and "
            f"{up_late.get('post_done', 0) - up_before.get('post_done', 0)} complete by then; "
            f"after the client closed its sockets at the end of the watch: "
            f"{up_after.get('post_reading')} still being read, "
            f"{up_after.get('post_aborted', 0) - up_before.get('post_aborted', 0)} ended incomplete. "
            f"Gateway fds: "
            f"{m.get('s3_post_fds_at_start')} with the slow-POSTs connected, {m.get('s3_post_fds_late', '—')} "
            f"near the end of the watch, {m.get('s3_post_fds_at_end')} after the client had closed them (slow-loris: {m.get('s3_loris_fds_at_start')} → {m.get('s3_loris_fds_at_end')})."
        )
        L.append("")

    # ---- 4
    L.append("### 4. Floods of distinct invalid tokens")
    L.append("")
    L.append(
        "Route with `verifiers = [\"api_keys\", \"es256\"]` (ES256 issuer, `jwks_file`), proxied to "
        "nginx. wrk with `bench/abuse_flood.lua`: every request carries a new random token, and "
        "the script counts the response statuses. CPU is the gateway's utime + stime "
        "(`/proc/PID/stat`) over the measured run; RSS is `VmRSS` right before and right after it; "
        "the peak is `VmHWM` after it."
    )
    L.append("")
    L.append("| Tokens | req/s | p99 | responses | gateway CPU s per 1,000 rejections | µs per rejection | VmRSS before → after | VmHWM |")
    L.append("|---|---:|---:|---|---:|---:|---|---:|")
    flood_rows = []
    for key, label, short in (
        ("s4_jwt_garbage", "random JWT-shaped (three random base64url segments)", "JWT-shaped garbage"),
        ("s4_forged_sig", "well-formed ES256 token (right `iss`, `kid`, `aud`), random signature", "forged signature"),
        ("s4_opaque", "random opaque (43 base64url characters)", "opaque"),
    ):
        w = wrks.get(key)
        if not w:
            continue
        ticks = num(key + "_ticks")
        per_k = ticks / clk / w["requests"] * 1000 if w.get("requests") else None
        flood_rows.append(f"{short}: {n(w['rps'])} req/s, {n(per_k * 1000 if per_k is not None else None, 1)} µs CPU per rejection")
        L.append(
            f"| {label} | {n(w['rps'])} | {fmt_ms(w['p99'])} | {statuses_text(w)} | {n(per_k, 3)} | "
            f"{n(per_k * 1000 if per_k is not None else None, 1)} | "
            f"{mib(num(key + '_rss_before_kb'))} → {mib(num(key + '_rss_after_kb'))} | {mib(num(key + '_hwm_after_kb'))} |"
        )
    L.append("")
    total = sum((wrks[k]["requests"] or 0) for k in ("s4_jwt_garbage", "s4_forged_sig", "s4_opaque") if k in wrks)
    if flood_rows:
        S.append((
            "4. floods of distinct invalid tokens",
            "; ".join(flood_rows)
            + f"; RSS {mib(num('s4_start_rss_kb'))} → {mib(num('s4_end_rss_kb'))} over {n(total)} rejections",
        ))
    L.append(
        f"Gateway VmRSS before the first flood {mib(num('s4_start_rss_kb'))}, after all three "
        f"(plus warm-ups; {n(total)} measured rejections) {mib(num('s4_end_rss_kb'))}; "
        f"peak {mib(num('s4_end_hwm_kb'))}."
    )
    L.append("")

    # ---- 5
    L.append("### 5. Unknown-`kid` floods, JWKS over HTTP")
    L.append("")
    L.append(
        "Issuer with `jwks_uri` on a Python server that counts hits; every request carries a "
        "token with the right `iss` and `aud`, a random 16-character `kid` and a random "
        "signature. Fetches are counted from after the gateway had loaded its keys (start-up "
        "fetch) to the end of the measured run."
    )
    L.append("")
    L.append("| `jwks_refetch_min_interval` | req/s | p99 | responses | JWKS fetches during the flood | flood length | gateway CPU µs per request |")
    L.append("|---|---:|---:|---|---:|---:|---:|")
    for name, label in (("j1", '`"1s"`'), ("j30", "default (`30s`)")):
        w = wrks.get(f"s5_{name}")
        if not w:
            continue
        fetches = (num(f"s5_{name}_hits_end") or 0) - (num(f"s5_{name}_hits_start") or 0)
        ticks = num(f"s5_{name}_ticks")
        cpu_us = ticks / clk / w["requests"] * 1e6 if w.get("requests") else None
        S.append((
            f"5. unknown-`kid` flood, `jwks_refetch_min_interval` {label}",
            f"{n(w['rps'])} req/s, {n(fetches)} JWKS fetches in {m.get('duration')}",
        ))
        L.append(
            f"| {label} | {n(w['rps'])} | {fmt_ms(w['p99'])} | {statuses_text(w)} | {n(fetches)} | "
            f"{m.get('duration')} | {n(cpu_us, 1)} |"
        )
    L.append("")

    # ---- logs
    L.append("### Gateway log (level `warn`) during the scenarios")
    L.append("")
    L.append(
        "Lines each gateway logged at `warn` or above, start-up configuration diagnostics "
        "(the API-key routes' \"no authorization server\" notice) left out."
    )
    L.append("")
    L.append("| Gateway | lines | messages (count) |")
    L.append("|---|---:|---|")
    for name, label in (("gw-sse", "1 (SSE)"), ("gw-idle", "2 (idle)"), ("gw-main", "3 (idle probe, slow)"), ("gw-auth", "4 (floods)"),
                        ("gw-j1", "5 (1 s)"), ("gw-j30", "5 (30 s)")):
        lines, counts = gateway_log_summary(results / f"{name}.log")
        msgs = "; ".join(f"{k} ({v:,})" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:4]) or "—"
        L.append(f"| {label} | {lines:,} | {msgs.replace('|', '/')} |")
    L.append("")
    summary = ["| Scenario | Key figures |", "|---|---|"]
    summary += [f"| {a} | {b} |" for a, b in S]
    L[intro_end:intro_end] = summary + [""]
    return "\n".join(L) + "\n"


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip("\n") == HEADING), None)
    if start is None:
        if text and not text.endswith("\n"):
            text += "\n"
        if text and not text.endswith("\n\n"):
            text += "\n"
        path.write_text(text + section)
        return
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    tail = "".join(lines[end:])
    path.write_text("".join(lines[:start]) + section + ("\n" + tail if tail else ""))


def main(argv):
    if len(argv) not in (2, 3):
        sys.exit(__doc__)
    section = build(Path(argv[1]))
    sys.stdout.write(section)
    if len(argv) == 3:
        write_section(Path(argv[2]), section)


if __name__ == "__main__":
    main(sys.argv)
