#!/usr/bin/env python3
"""Turns a bench/run.sh results directory into the results section of BENCHMARKS.md.

    report.py RESULTS_DIR BENCHMARKS.md

RESULTS_DIR holds `<case>.r<round>.wrk` (wrk --latency output), `cases.tsv` (case id, round,
CPU ticks of the process under test, of the auth target, of the upstream, wrk's user and
system seconds, busy and steal ticks of the machine), `meta.env` (machine, versions, memory,
SSE snapshots) and, per SSE count, `sse-<n>-ready.json` / `sse-<n>.json` (the client's
summaries) and `sse-<n>.log` (the gateway's log). Only the text between the two markers below
is replaced; everything else in the file (the method) is kept. A missing file is created with
a pointer to bench/.

Every figure is the median over the rounds, each column on its own; ranges are min–max.
Memory is shown in decimal units (1 MB = 10^6 bytes, 1 KB = 10^3 bytes), the units of the
targets; VmRSS is read in KiB.
"""

import json
import re
import statistics
import sys
from pathlib import Path

START = "<!-- bench:results:start (written by bench/run.sh; edits here are overwritten) -->"
END = "<!-- bench:results:end -->"

# The 64-connection throughput rows, in table order.
THROUGHPUT = {
    "direct": "upstream direct (nginx `return 200`)",
    "nginx": "nginx `proxy_pass` (keep-alive to the upstream) — **reference**",
    "gw-open": "gateway, no auth",
    "gw-key": "gateway, API key",
    "gw-jwt": "gateway, ES256 JWT (cached), `warn`",
    "gw-jwt-uncached": "gateway, ES256 JWT, signature checked on ~every request (100 tokens, 1-entry cache), `warn`",
    "gw-jwt-rule": "gateway, ES256 JWT + tool rule, `warn` (no audit line)",
    "gw-jwt-info-rule": "**gateway, ES256 JWT + tool rule, default logging (`info`, `pretty`)**",
    "verify-key": "`/verify`, API key (wrk direct)",
    "verify-jwt": "`/verify`, ES256 JWT (wrk direct)",
}
AUTH_REQUEST = {
    "ar-stub": "nginx `auth_request` → stub nginx (`return 200`)",
    "ar-verify": "nginx `auth_request` → gateway `/verify` (ES256 JWT)",
}
LATENCY = {
    "lat-direct": "upstream direct",
    "lat-nginx": "nginx `proxy_pass`",
    "lat-gw-jwt": "gateway, ES256 JWT (cached), `warn`",
    "lat-gw-jwt-info-rule": "gateway, ES256 JWT + tool rule, default logging",
    "lat-verify-jwt": "`/verify`, ES256 JWT (the check alone, no upstream)",
}

UNITS_US = {"us": 1.0, "ms": 1000.0, "s": 1e6, "m": 6e7}


def us(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unknown wrk duration {text!r}")
    return float(m.group(1)) * UNITS_US[m.group(2)]


def parse_wrk(text: str, name: str) -> dict:
    if re.search(r"Non-2xx or 3xx responses|Socket errors", text):
        raise SystemExit(f"{name}: wrk output reports errors; refusing to report it")
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    total = re.search(r"^\s+(\d+) requests in", text, re.M)
    pct = {p: re.search(rf"^\s+{p}%\s+(\S+)", text, re.M) for p in (50, 90, 99)}
    if not (rps and total and all(pct.values())):
        raise SystemExit(f"cannot parse wrk output of {name}:\n" + text)
    return {
        "rps": float(rps.group(1)),
        "requests": int(total.group(1)),
        **{f"p{p}": us(m.group(1)) for p, m in pct.items()},
    }


def fmt_lat(value_us: float) -> str:
    if value_us < 1000:
        return f"{value_us:.0f} µs"
    ms = value_us / 1000
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms"


def mb(kb: float) -> str:
    """KiB (as /proc reports it) -> decimal MB."""
    return f"{kb * 1024 / 1e6:.1f} MB"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def median(values):
    return statistics.median(values)


def load(results: Path, meta: dict) -> tuple[dict, dict]:
    """Per case: the list of rounds (dicts) and the median row."""
    clk = int(meta["clk_tck"])
    rounds: dict[str, list[dict]] = {}
    for line in (results / "cases.tsv").read_text().splitlines():
        case, rnd, cpu, aux, up_cpu, wrk_cpu, busy, steal = line.split("\t")
        data = parse_wrk((results / f"{case}.r{rnd}.wrk").read_text(), f"{case} round {rnd}")
        user, system = (float(x) for x in wrk_cpu.split())
        n = data["requests"]
        data["round"] = int(rnd)
        data["cpu_us"] = int(cpu) / clk * 1e6 / n
        data["aux_us"] = int(aux) / clk * 1e6 / n
        data["up_us"] = int(up_cpu) / clk * 1e6 / n
        data["wrk_us"] = (user + system) * 1e6 / n
        data["machine_us"] = int(busy) / clk * 1e6 / n
        data["steal_ticks"] = int(steal)
        rounds.setdefault(case, []).append(data)
    rows = {}
    for case, runs in rounds.items():
        row = {
            key: median([r[key] for r in runs])
            for key in ("rps", "p50", "p90", "p99", "cpu_us", "aux_us", "up_us", "wrk_us", "machine_us")
        }
        row["rps_min"] = min(r["rps"] for r in runs)
        row["rps_max"] = max(r["rps"] for r in runs)
        row["requests"] = sum(r["requests"] for r in runs)
        rows[case] = row
    return rounds, rows


def per_round_ratio(rounds: dict, a: str, b: str, key: str = "rps") -> list[float]:
    by_round = {r["round"]: r[key] for r in rounds.get(b, [])}
    return [r[key] / by_round[r["round"]] for r in rounds.get(a, []) if r["round"] in by_round]


def per_round_diff(rounds: dict, a: str, b: str, key: str) -> list[float]:
    by_round = {r["round"]: r[key] for r in rounds.get(b, [])}
    return [r[key] - by_round[r["round"]] for r in rounds.get(a, []) if r["round"] in by_round]


def ratios_text(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}×" for v in values)


def range_text(row: dict, rounds: int) -> str:
    return f"{row['rps_min']:,.0f}–{row['rps_max']:,.0f}" if rounds > 1 else "—"


def gateway_log_lines(path: Path, offset: int) -> tuple[dict, dict]:
    """WARN/ERROR lines of a JSON-format gateway log (and any other text line), counted by
    message: those before `offset` (start-up) and those after (while the streams ran)."""
    if not path.exists():
        return {}, {}
    data = path.read_bytes()
    counts = ({}, {})
    pos = 0
    for raw in data.splitlines(keepends=True):
        part = counts[0] if pos < offset else counts[1]
        pos += len(raw)
        line = raw.decode("utf-8", "replace").strip()
        if not line:
            continue
        try:
            event = json.loads(line)
            level = str(event.get("level", "")).upper()
            if level not in ("WARN", "ERROR"):
                continue
            message = f"{level} {event.get('message') or event.get('fields', {}).get('message', '')}"
        except (json.JSONDecodeError, AttributeError):
            message = line
        if len(message) > 120:
            message = message[:119] + "…"
        part[message] = part.get(message, 0) + 1
    return counts


def counts_text(counts: dict) -> str:
    if not counts:
        return "none"
    return "; ".join(f"{n}× `{m}`" for m, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def main(results_dir: str, out_file: str) -> None:
    results = Path(results_dir)
    meta = dict(
        line.split("=", 1)
        for line in (results / "meta.env").read_text().splitlines()
        if "=" in line
    )
    n_rounds = int(meta["rounds"])
    clk = int(meta["clk_tck"])
    rounds, rows = load(results, meta)
    steal = sum(r["steal_ticks"] for runs in rounds.values() for r in runs)
    nginx = rows["nginx"]

    def vs_nginx(case: str) -> float:
        return rows[case]["rps"] / nginx["rps"]

    spreads = [
        (row["rps_max"] - row["rps_min"]) / row["rps"]
        for case, row in rows.items()
        if case in THROUGHPUT or case in AUTH_REQUEST or case == "verify-newconn"
    ]
    headline = rows.get("gw-jwt-info-rule")
    headline_rounds = per_round_ratio(rounds, "gw-jwt-info-rule", "nginx")

    lines = [
        START,
        "## Results",
        "",
    ]
    if headline:
        lines += [
            f"> **Headline: gateway with ES256 JWT, default logging (`info`, `pretty`) and a tool "
            f"rule = {vs_nginx('gw-jwt-info-rule'):.2f}× nginx `proxy_pass`** "
            f"({headline['rps']:,.0f} vs {nginx['rps']:,.0f} req/s"
            + (f"; per round: {ratios_text(headline_rounds)}" if n_rounds > 1 else "")
            + "). Target: ≥ 1.00×.",
            "",
        ]
    lines += [
        f"Recorded {meta['date']} at commit `{meta['commit']}` ({meta['rustc']}; binary: "
        f"{meta['binary']}). Machine: **{meta['nproc']} cores** ({meta['cpu']}), {meta['mem']} "
        f"RAM, {meta['kernel']}; {meta['wrk']}, nginx {meta['nginx']}, {meta['python']}.",
        "",
        f"Noise: {n_rounds} round{'s' if n_rounds > 1 else ''}, every case once per round in "
        "the same order"
        + (
            "; each figure is the median of the rounds (each column on its own) and the range "
            "is the slowest and fastest round; req/s spread (max − min) / median: "
            f"median {100 * median(spreads):.0f}%, largest {100 * max(spreads):.0f}%"
            if n_rounds > 1
            else " (one round: no medians, no spread; use `BENCH_ROUNDS=3` for conclusions)"
        )
        + f". CPU busy before the first run (other load on the machine): "
        f"{meta['quiet_busy_pct']}%; CPU steal during the runs: {steal / clk:.1f} s. "
        f"wrk `-t{meta['threads']} -c{meta['connections']} -d{meta['duration']} --latency` "
        f"after a {meta['warmup']} warm-up (one-connection rows: `-t1 -c1 -d{meta['lat_duration']}`); "
        f"requests: `POST` of a {meta['call_bytes']}-byte `tools/call` of `{meta['tool']}`; "
        f"answer: {meta['body_bytes']} bytes. wrk, every nginx, the Python SSE processes and the "
        f"gateways share the same {meta['nproc']} cores. The measured runs took "
        f"{int(meta['runs_seconds']) / 60:.1f} min, the whole script {int(meta['total_seconds']) / 60:.1f} min.",
        "",
    ]
    if int(meta["quiet_busy_pct"]) > 10:
        lines += [
            f"**Caution: {meta['quiet_busy_pct']}% of the CPU was already busy before the first "
            "run — something else was running; every number below is depressed by it and the "
            "ratios are less reliable than usual. Re-run on a quiet machine.**",
            "",
        ]

    # --- Throughput --------------------------------------------------------------------------
    lines += [
        "### Throughput, 64 connections",
        "",
        "| Target | req/s | vs nginx `proxy_pass` | p50 | p99 | server CPU µs/req | machine CPU µs/req | req/s range |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case, label in THROUGHPUT.items():
        if case not in rows:
            continue
        r = rows[case]
        lines.append(
            f"| {label} | {r['rps']:,.0f} | {vs_nginx(case):.2f}× | {fmt_lat(r['p50'])} | "
            f"{fmt_lat(r['p99'])} | {r['cpu_us']:.1f} | {r['machine_us']:.1f} | "
            f"{range_text(r, n_rounds)} |"
        )
    lines += [
        "",
        "*server CPU* is user+system time (`/proc/<pid>/stat`) of the process in front of the "
        "upstream per completed request: the upstream nginx itself for *direct*, master and "
        "workers for the nginx proxy, the gateway process otherwise. It leaves out the kernel's "
        "softirq time (most of the loopback TCP work), which Linux charges to no process. "
        "*machine CPU* is all busy CPU time of the machine (wrk, upstream, proxy, softirq, "
        "anything else) per request. Clock ticks are 1/"
        f"{clk} s, so short runs round the CPU figures. Upstream and wrk CPU per request:",
        "",
        "| Target | upstream CPU µs/req | wrk CPU µs/req |",
        "|---|---:|---:|",
    ]
    for case, label in THROUGHPUT.items():
        if case in rows:
            r = rows[case]
            lines.append(f"| {label} | {r['up_us']:.1f} | {r['wrk_us']:.1f} |")

    # --- auth_request ------------------------------------------------------------------------
    stub, arv = rows.get("ar-stub"), rows.get("ar-verify")
    if stub and arv:
        ar_rounds = per_round_ratio(rounds, "ar-verify", "ar-stub")
        lines += [
            "",
            "### nginx `auth_request`: the gateway's `/verify` against a stub",
            "",
            "| Front | req/s | vs stub | p50 | p99 | front nginx CPU µs/req | auth target CPU µs/check | machine CPU µs/req | req/s range |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for case, label in AUTH_REQUEST.items():
            r = rows[case]
            lines.append(
                f"| {label} | {r['rps']:,.0f} | {r['rps'] / stub['rps']:.2f}× | "
                f"{fmt_lat(r['p50'])} | {fmt_lat(r['p99'])} | {r['cpu_us']:.1f} | "
                f"{r['aux_us']:.1f} | {r['machine_us']:.1f} | {range_text(r, n_rounds)} |"
            )
        lines += [
            "",
            f"`/verify` variant against the stub variant: **{arv['rps'] / stub['rps']:.2f}×** req/s"
            + (f" (per round: {ratios_text(ar_rounds)})" if n_rounds > 1 else "")
            + f"; the gateway spends **{arv['aux_us']:.1f} µs of CPU per check** (the stub nginx "
            f"{stub['aux_us']:.1f} µs). Both fronts are the same nginx configuration; against "
            f"nginx `proxy_pass` alone they do {stub['rps'] / nginx['rps']:.2f}× (stub) and "
            f"{arv['rps'] / nginx['rps']:.2f}× (`/verify`).",
        ]

    # --- /verify, new connection per check ----------------------------------------------------
    vj, vn = rows.get("verify-jwt"), rows.get("verify-newconn")
    if vn:
        lines += [
            "",
            "### `/verify` on a new connection per check (Traefik's way)",
            "",
            "| Connection | checks/s | p50 | p99 | gateway CPU µs/check | machine CPU µs/check | range |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for case, label in (("verify-jwt", "keep-alive"), ("verify-newconn", "`Connection: close`: a new TCP connection per check")):
            if case in rows:
                r = rows[case]
                lines.append(
                    f"| {label} | {r['rps']:,.0f} | {fmt_lat(r['p50'])} | {fmt_lat(r['p99'])} | "
                    f"{r['cpu_us']:.1f} | {r['machine_us']:.1f} | {range_text(r, n_rounds)} |"
                )
        lines += [
            "",
            "Both send the JWT and describe `POST /jwt`; the gateway answers `Connection: close` "
            "and closes after each answer. The CPU includes the gateway's accept and close.",
        ]

    # --- Latency at one connection -----------------------------------------------------------
    if "lat-direct" in rows:
        direct = rows["lat-direct"]
        lines += [
            "",
            "### Latency at one connection (`wrk -t1 -c1`)",
            "",
            "| Target | req/s | p50 | p90 | p99 | added p50 vs direct | added, per round |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for case, label in LATENCY.items():
            if case not in rows:
                continue
            r = rows[case]
            if case in ("lat-direct", "lat-verify-jwt"):
                added, per = "—", "—"
            else:
                diffs = per_round_diff(rounds, case, "lat-direct", "p50")
                added = f"{median(diffs):+.0f} µs"
                per = ", ".join(f"{d:+.0f}" for d in diffs) + " µs"
            lines.append(
                f"| {label} | {r['rps']:,.0f} | {fmt_lat(r['p50'])} | {fmt_lat(r['p90'])} | "
                f"{fmt_lat(r['p99'])} | {added} | {per} |"
            )
        lines += [
            "",
            "*added* = p50 through the proxy − p50 of the upstream direct, in the same round "
            f"(median of the rounds). wrk prints latencies with two decimals in µs or ms; the "
            f"direct p50 here is {fmt_lat(direct['p50'])}. The `/verify` row is the whole "
            "round trip of a check: what an `auth_request` front waits before it proxies.",
        ]

    # --- SSE -------------------------------------------------------------------------------
    sse_counts = meta.get("sse_counts", "").split()
    sse = {}
    if sse_counts:
        lines += [
            "",
            "### Idle SSE streams",
            "",
            "| Streams | opened | open time | gateway RSS before | held | **per stream** | after all closed | fds before → held | got a keep-alive while held | closed by the gateway while held | gateway WARN/ERROR lines while held |",
            "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
        ]
        for want in sse_counts:
            p = f"sse_{want}"
            n = int(meta[f"{p}_n"])
            ready = json.loads((results / f"sse-{want}-ready.json").read_text())
            final = json.loads((results / f"sse-{want}.json").read_text())
            before, held = int(meta[f"{p}_rss_before_kb"]), int(meta[f"{p}_rss_held_kb"])
            per_kb = (held - before) * 1024 / 1000 / n
            fds_before, fds_held = int(meta[f"{p}_fds_before"]), int(meta[f"{p}_fds_held"])
            startup, during = gateway_log_lines(results / f"sse-{want}.log", int(meta[f"{p}_log_offset"]))
            errors = final.get("errors_total") or ready.get("errors") or {}
            ok = (
                ready["ok"] == n
                and not errors
                and final["closed_by_peer_while_held"] == 0
                and final["streams_with_a_keepalive_while_held"] == n
            )
            sse[want] = {"n": n, "want": int(want), "per_kb": per_kb, "held_kb": held, "ok": ok}
            label = f"{n:,}" + (f" (of {int(want):,} asked)" if n != int(want) else "")
            lines.append(
                f"| {label} | {ready['ok']:,}"
                + (f" (errors: {errors})" if errors else "")
                + f" | {ready['open_seconds']} s | {mb(before)} | {mb(held)} | **{per_kb:.1f} KB** | "
                f"{mb(int(meta[f'{p}_rss_closed_kb']))} | {fds_before} → {fds_held:,} "
                f"({(fds_held - fds_before) / n:.2f} per stream) | "
                f"{final['streams_with_a_keepalive_while_held']:,} of {n:,} | "
                f"{final['closed_by_peer_while_held']} | {counts_text(during)} |"
            )
            sse[want]["startup_log"] = startup
        startup_all = {}
        for v in sse.values():
            for m, c in v["startup_log"].items():
                startup_all[m] = startup_all.get(m, 0) + c
        lines += [
            "",
            "Each count runs on a fresh gateway (API-key route, `max_connections = 20000`, "
            "`max_connections_per_ip = 0`, `level = \"warn\"`, `format = \"json\"`) in front of "
            f"`bench/abuse_upstream.py`, which sends `: keep-alive` on every stream every "
            f"{meta['sse_interval']} s; one Python asyncio client opens the streams "
            f"(`GET /mcp`, `Accept: text/event-stream`, the key) and holds them {meta['sse_hold']} s "
            "after the last one opened. *before*: after one stream opened and closed; *held*: 2 s "
            "after the last stream opened; *per stream* = (held − before) / streams; *after all "
            f"closed*: 2 s after the client closed them. `ulimit -n` {meta['nofile']} (hard limit) "
            f"for every process: at most {int(meta['sse_fit']):,} streams fit (2 descriptors "
            "each in the gateway). Gateway log lines at start (all counts): "
            f"{counts_text(startup_all)}.",
        ]

    # --- Memory ------------------------------------------------------------------------------
    rss_start, rss_after = int(meta["rss_start_kb"]), int(meta["rss_after_kb"])
    hwm, rss_burst, hwm_burst = int(meta["hwm_kb"]), int(meta["rss_burst_kb"]), int(meta["hwm_burst_kb"])
    lines += [
        "",
        "### Gateway memory (the `warn` instance, `VmRSS` from `/proc/<pid>/status`)",
        "",
        "| After start (idle) | Idle after all runs | Peak during the runs (`VmHWM`) "
        f"| Idle {meta['burst_settle']} s after a {meta['burst_connections']}-connection burst | Peak during the burst |",
        "|---:|---:|---:|---:|---:|",
        f"| {mb(rss_start)} | {mb(rss_after)} | {mb(hwm)} | {mb(rss_burst)} | {mb(hwm_burst)} |",
        "",
        "*After start*: one second after start, `/healthz` the only request. *Idle after all "
        "runs*: two seconds after the last wrk run of the last round. This instance served "
        "every gateway row except the default-logging and the uncached ones, both `/verify` "
        "rows, the new-connection row and the checks of the `auth_request` front. The burst is 5 s of "
        f"`wrk -c{meta['burst_connections']}` POSTing to `/open` "
        f"({int(meta['burst_requests']):,} requests"
        + (f"; wrk reported: {meta['burst_errors']}" if meta.get("burst_errors") else "; no socket errors")
        + "); afterwards the gateway still holds up to 64 idle upstream connections per worker (90 s pool "
        "timeout); the rest is memory the allocator keeps until the gateway trims it (once connections have closed in numbers).",
        "",
        f"The default-logging instance wrote {int(meta['info_log_lines']):,} audit lines naming "
        f"the called tool (`mcp_target=\"{meta['tool']}\"`; {int(meta['info_log_bytes']) / 1e6:.1f} MB "
        f"of log in all) for {int(meta['info_log_requests']):,} requests to its `/jwt-rule` route "
        "(warm-ups and runs)"
        + (
            f"; its writer reported {int(meta['info_log_dropped']):,} lines dropped"
            if int(meta["info_log_dropped"])
            else "; none dropped"
        )
        + ".",
    ]

    # --- Where we stand ----------------------------------------------------------------------
    lines += ["", "### Where we stand", ""]
    if headline:
        r = vs_nginx("gw-jwt-info-rule")
        lines.append(
            f"- JWT + default logging + tool rule ≥ 1.0× nginx `proxy_pass`: {verdict(r >= 1.0)} — "
            f"{r:.2f}× ({headline['rps']:,.0f} vs {nginx['rps']:,.0f} req/s"
            + (f"; per round {ratios_text(headline_rounds)}" if n_rounds > 1 else "")
            + f"); server CPU {headline['cpu_us']:.1f} vs {nginx['cpu_us']:.1f} µs per request"
            + (f"; it would need {1 / r:.2f}× its throughput" if r < 1 else "")
            + "."
        )
    quiet = rows.get("gw-jwt-rule")
    if quiet:
        r = vs_nginx("gw-jwt-rule")
        faster = headline is None or quiet["rps"] > headline["rps"]
        lines.append(
            f"- Faster without logging (JWT + tool rule at `warn`, > 1.0× nginx): "
            f"{verdict(r > 1.0)} — {r:.2f}× nginx"
            + (
                f", {quiet['rps'] / headline['rps']:.2f}× the default-logging row "
                f"({quiet['cpu_us']:.1f} vs {headline['cpu_us']:.1f} CPU µs per request"
                + ("" if faster else "; not faster than with logging in this run")
                + ")"
                if headline
                else ""
            )
            + "."
        )
    if sse:
        largest = max(sse.values(), key=lambda v: v["n"])
        lines.append(
            f"- ≤ 15 KB of gateway RSS per idle SSE stream (at the largest count): "
            f"{verdict(largest['per_kb'] <= 15)} — "
            + ", ".join(f"{v['per_kb']:.1f} KB at {v['n']:,}" for v in sse.values())
            + " streams."
        )
        total_mb = largest["held_kb"] * 1024 / 1e6
        if largest["n"] >= 9900:
            lines.append(
                f"- 9,900 streams < 150 MB RSS in all: {verdict(total_mb < 150)} — "
                f"{total_mb:.1f} MB with {largest['n']:,} streams held."
            )
        else:
            lines.append(
                f"- 9,900 streams < 150 MB RSS in all: **not measured** — the largest count was "
                f"{largest['n']:,} ({total_mb:.1f} MB held)."
            )
        failed = [f"{v['n']:,}" for v in sse.values() if not v["ok"]]
        lines.append(
            "- Every stream opened, stayed open and received keep-alives while held: "
            + (f"**no** — at {', '.join(failed)} streams (see the table)." if failed else "yes, at every count.")
        )
    limit_idle, limit_burst = 20_000, 30_000  # KB (decimal)
    start_kb, after_kb, burst_kb = (x * 1024 / 1000 for x in (rss_start, rss_after, rss_burst))
    lines.append(
        f"- Idle memory < 20 MB: {verdict(start_kb < limit_idle and after_kb < limit_idle)} — "
        f"{mb(rss_start)} after start, {mb(rss_after)} after the runs."
    )
    lines.append(
        f"- < 30 MB after a {meta['burst_connections']}-connection burst: "
        f"{verdict(burst_kb < limit_burst)} — {mb(rss_burst)} {meta['burst_settle']} s after it."
    )
    if stub and arv:
        r = arv["rps"] / stub["rps"]
        lines.append(
            f"- nginx `auth_request` → `/verify` ≥ 0.95× the stub: {verdict(r >= 0.95)} — {r:.2f}×"
            + (f" (per round {ratios_text(per_round_ratio(rounds, 'ar-verify', 'ar-stub'))})" if n_rounds > 1 else "")
            + f"; {arv['aux_us']:.1f} µs of gateway CPU per check."
        )
    if vn:
        lines.append(
            f"- `/verify` on a new connection ≤ 30 µs of gateway CPU per check: "
            f"{verdict(vn['cpu_us'] <= 30)} — {vn['cpu_us']:.1f} µs"
            + (f" (keep-alive: {vj['cpu_us']:.1f} µs)" if vj else "")
            + "."
        )
    if "lat-gw-jwt" in rows and "lat-direct" in rows:
        added = median(per_round_diff(rounds, "lat-gw-jwt", "lat-direct", "p50"))
        text = (
            f"- Added latency ≤ 60 µs (p50 at one connection, gateway with JWT at `warn`): "
            f"{verdict(added <= 60)} — {added:+.0f} µs"
        )
        if "lat-gw-jwt-info-rule" in rows:
            added_info = median(per_round_diff(rounds, "lat-gw-jwt-info-rule", "lat-direct", "p50"))
            text += f"; with default logging and the tool rule {added_info:+.0f} µs ({verdict(added_info <= 60)})"
        if "lat-nginx" in rows:
            text += f"; nginx `proxy_pass` {median(per_round_diff(rounds, 'lat-nginx', 'lat-direct', 'p50')):+.0f} µs"
        lines.append(text + ".")
    if n_rounds == 1:
        lines.append(
            "- One round only: on this kind of machine a single run varies by ±10%; a ratio "
            "within ~0.9–1.1× is not a difference."
        )

    lines += ["", END]
    section = "\n".join(lines)

    out = Path(out_file)
    if out.exists():
        text = out.read_text()
        if START in text and END in text:
            before, rest = text.split(START, 1)
            _, after = rest.split(END, 1)
            text = before + section + after
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
    else:
        text = (
            "# Benchmarks\n\nProduced by `bench/run.sh`; see the script for the method.\n\n"
            + section
            + "\n"
        )
    out.write_text(text)
    # The headline on the terminal too.
    if headline:
        print(
            f"bench: HEADLINE: gateway JWT + default logging + tool rule = "
            f"{vs_nginx('gw-jwt-info-rule'):.2f}× nginx proxy_pass "
            f"({headline['rps']:,.0f} vs {nginx['rps']:,.0f} req/s)",
            file=sys.stderr,
        )
    for line in lines[lines.index("### Where we stand") + 2 : -2]:
        print("bench: " + line, file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
