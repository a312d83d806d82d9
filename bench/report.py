#!/usr/bin/env python3
"""Turns a bench/run.sh results directory into the results section of BENCHMARKS.md.

    report.py RESULTS_DIR BENCHMARKS.md

RESULTS_DIR holds `<case>.wrk` (wrk --latency output), `cases.tsv` (case id, CPU ticks used
by the process under test, CPU ticks used by the upstream, wrk's user and system seconds)
and `meta.env` (machine, versions, memory). Only the text between the two markers below is
replaced; everything else in the file (the method) is kept. A missing file is created with a
pointer to bench/.
"""

import re
import sys
from pathlib import Path

START = "<!-- bench:results:start (written by bench/run.sh; edits here are overwritten) -->"
END = "<!-- bench:results:end -->"

# id -> (label, what does the work besides wrk and the upstream)
CASES = {
    "direct": ("upstream direct (nginx `return 200`)", "upstream nginx"),
    "nginx": ("nginx `proxy_pass`, no auth", "nginx proxy"),
    "gw-open": ("gateway, no auth (`[dangerous] unauthenticated_routes`)", "gateway"),
    "gw-key": ("gateway, API key", "gateway"),
    "gw-jwt": ("gateway, ES256 JWT", "gateway"),
    "verify-key": ("`/verify`, API key", "gateway"),
    "verify-jwt": ("`/verify`, ES256 JWT", "gateway"),
    "gw-jwt-info": ("gateway, ES256 JWT, **default `level = \"info\"`** (audit line per request)", "gateway"),
    "gw-jwt-uncached": ("gateway, ES256 JWT, signature checked on ~every request (100 tokens, 1-entry cache)", "gateway"),
}

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unknown wrk duration {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(text: str) -> dict:
    if re.search(r"Non-2xx or 3xx responses|Socket errors", text):
        raise SystemExit("wrk output reports errors; refusing to report it")
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    total = re.search(r"^\s+(\d+) requests in", text, re.M)
    if not (rps and p50 and p99 and total):
        raise SystemExit("cannot parse wrk output:\n" + text)
    return {
        "rps": float(rps.group(1)),
        "p50": ms(p50.group(1)),
        "p99": ms(p99.group(1)),
        "requests": int(total.group(1)),
    }


def fmt_ms(value: float) -> str:
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×"


def main(results_dir: str, out_file: str) -> None:
    results = Path(results_dir)
    meta = dict(
        line.split("=", 1)
        for line in (results / "meta.env").read_text().splitlines()
        if "=" in line
    )
    clk = int(meta["clk_tck"])
    rounds = {}
    for line in (results / "cases.tsv").read_text().splitlines():
        case, rnd, cpu, up_cpu, wrk_cpu, busy, steal = line.split("\t")
        data = parse_wrk((results / f"{case}.r{rnd}.wrk").read_text())
        user, system = (float(x) for x in wrk_cpu.split())
        n = data["requests"]
        data["cpu_us"] = int(cpu) / clk * 1e6 / n
        data["up_cpu_us"] = int(up_cpu) / clk * 1e6 / n
        data["wrk_cpu_us"] = (user + system) * 1e6 / n
        data["machine_us"] = int(busy) / clk * 1e6 / n
        data["steal_ticks"] = int(steal)
        rounds.setdefault(case, []).append(data)
    rows = {}
    for case, runs in rounds.items():
        runs = sorted(runs, key=lambda r: r["rps"])
        row = dict(runs[(len(runs) - 1) // 2])  # the median round (lower median if even)
        row["rps_min"], row["rps_max"] = runs[0]["rps"], runs[-1]["rps"]
        rows[case] = row
    n_rounds = int(meta.get("rounds", "1"))
    steal = sum(r["steal_ticks"] for runs in rounds.values() for r in runs)

    direct, nginx = rows["direct"], rows["nginx"]
    lines = [
        START,
        "## Results",
        "",
        f"Recorded {meta['date']} at commit `{meta['commit']}` ({meta['rustc']}).",
        "",
        f"Machine: **{meta['nproc']} cores** ({meta['cpu']}), {meta['mem']} RAM, "
        f"{meta['kernel']}; {meta['wrk']}, nginx {meta['nginx']}. "
        f"wrk `-t{meta['threads']} -c{meta['connections']} -d{meta['duration']} --latency` "
        f"after a {meta['warmup']} warm-up; response body {meta['body_bytes']} bytes. "
        + (
            "One round: each case ran once, in the order of the table. "
            if n_rounds == 1
            else f"{n_rounds} rounds: each row is the round with the median req/s; the "
            "range column shows the slowest and fastest round. "
        )
        + f"CPU busy before the first run (other load on the machine): "
        f"{meta['quiet_busy_pct']}%; CPU steal during the runs: {steal / clk:.1f} s. "
        "wrk, both nginx instances and the gateway all share the same "
        f"{meta['nproc']} cores.",
        "",
        "| Target | req/s | p50 | p99 | server CPU µs/req | machine CPU µs/req |"
        + (" req/s range |" if n_rounds > 1 else ""),
        "|---|---:|---:|---:|---:|---:|" + ("---:|" if n_rounds > 1 else ""),
    ]
    for case, (label, _) in CASES.items():
        if case not in rows:
            continue
        r = rows[case]
        lines.append(
            f"| {label} | {r['rps']:,.0f} | {fmt_ms(r['p50'])} | {fmt_ms(r['p99'])} | "
            f"{r['cpu_us']:.1f} | {r['machine_us']:.1f} |"
            + (f" {r['rps_min']:,.0f}–{r['rps_max']:,.0f} |" if n_rounds > 1 else "")
        )
    lines += [
        "",
        "Ratios (req/s above 1× is faster than the reference; latency above 1× is slower):",
        "",
        "| Target | req/s vs direct | p50 vs direct | p99 vs direct | req/s vs nginx | p50 vs nginx | p99 vs nginx |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case, (label, _) in CASES.items():
        if case not in rows:
            continue
        r = rows[case]
        lines.append(
            f"| {label} | {ratio(r['rps'], direct['rps'])} | {ratio(r['p50'], direct['p50'])} | "
            f"{ratio(r['p99'], direct['p99'])} | {ratio(r['rps'], nginx['rps'])} | "
            f"{ratio(r['p50'], nginx['p50'])} | {ratio(r['p99'], nginx['p99'])} |"
        )
    lines += [
        "",
        "*server CPU* is user+system time of the process in front of the upstream (the upstream "
        "nginx itself for *direct*; master and workers for the nginx proxy; the gateway "
        "process for the gateway rows) per completed request. It leaves out the kernel's "
        "softirq time — most of the loopback TCP work — which Linux charges to no process. "
        "*machine CPU* is all busy CPU time of the machine (wrk, upstream, proxy, softirq, "
        "anything else) per completed request. Per-case CPU of the upstream and of wrk:",
        "",
        "| Target | upstream CPU µs/req | wrk CPU µs/req |",
        "|---|---:|---:|",
    ]
    for case, (label, _) in CASES.items():
        if case in rows:
            r = rows[case]
            lines.append(f"| {label} | {r['up_cpu_us']:.1f} | {r['wrk_cpu_us']:.1f} |")

    rss_start = int(meta["rss_start_kb"]) / 1024
    rss_after = int(meta["rss_after_kb"]) / 1024
    hwm = int(meta["hwm_kb"]) / 1024
    rss_burst = int(meta["rss_burst_kb"]) / 1024
    hwm_burst = int(meta["hwm_burst_kb"]) / 1024
    log_mb = int(meta["info_log_bytes"]) / 1e6
    lines += [
        "",
        "### Gateway memory (the `warn` instance, `VmRSS` from `/proc/<pid>/status`)",
        "",
        "| After start (idle) | Idle after all runs (64 connections) | Peak during the runs (`VmHWM`) "
        f"| Idle after a {meta['burst_connections']}-connection burst | Peak during the burst |",
        "|---:|---:|---:|---:|---:|",
        f"| {rss_start:.1f} MiB | {rss_after:.1f} MiB | {hwm:.1f} MiB | {rss_burst:.1f} MiB | "
        f"{hwm_burst:.1f} MiB |",
        "",
        "\"Idle\" is two seconds after wrk stopped (one second after start for the first column). "
        f"The burst is 5 s of `wrk -c{meta['burst_connections']}` at `/open`"
        + (f" (wrk reported: {meta['burst_errors']})" if meta.get("burst_errors") else "")
        + "; afterwards the gateway still holds up to 256 idle upstream connections (90 s "
        "pool timeout), the rest is memory the allocator has not returned to the system.",
        "",
        f"The `info` instance wrote {int(meta['info_log_lines']):,} log lines "
        f"({log_mb:.1f} MB) to a file for {int(meta['info_log_requests']):,} requests "
        "(warm-ups and runs).",
        "",
        "### Where we stand",
        "",
    ]
    if int(meta["quiet_busy_pct"]) > 10:
        lines.append(
            f"- **Caution: {meta['quiet_busy_pct']}% of the CPU was already busy before the "
            "first run — something else was running; every number below is depressed by it "
            "and the ratios are less reliable than usual. Re-run on a quiet machine.**"
        )

    jwt = rows.get("gw-jwt")
    if jwt:
        r = jwt["rps"] / nginx["rps"]
        verdict = "**met**" if r >= 1.0 else "**not met**"
        lines.append(
            f"- Aim: gateway with JWT at least as fast as nginx `proxy_pass` — {verdict} in this "
            f"run: {jwt['rps']:,.0f} vs {nginx['rps']:,.0f} req/s ({r:.2f}×"
            + (f"; it would need {1 / r:.1f}× its throughput" if r < 1 else "")
            + "), p50 "
            f"{fmt_ms(jwt['p50'])} vs {fmt_ms(nginx['p50'])}, p99 {fmt_ms(jwt['p99'])} vs "
            f"{fmt_ms(nginx['p99'])}. The JWT row is a token-cache hit (one SHA-256 and a map "
            "lookup per request); the uncached row shows the cost of checking the signature."
            + (
                " The gap is within the ±10% run-to-run noise of this machine; repeat before "
                "drawing a conclusion."
                if abs(r - 1.0) <= 0.10
                else ""
            )
        )
    open_ = rows.get("gw-open")
    if open_:
        lines.append(
            f"- Without auth the gateway does {open_['rps'] / nginx['rps']:.2f}× nginx's req/s "
            f"and uses {open_['cpu_us']:.1f} vs {nginx['cpu_us']:.1f} CPU µs per request; "
            "with auth it keeps "
            + " and ".join(
                f"{rows[c]['rps'] / open_['rps']:.2f}× ({name})"
                for c, name in (("gw-key", "API key"), ("gw-jwt", "JWT"))
                if c in rows
            )
            + " of its no-auth req/s."
        )
    info = rows.get("gw-jwt-info")
    if jwt and info:
        lines.append(
            f"- The shipped default (`level = \"info\"`, one audit line per request) gives "
            f"{info['rps']:,.0f} req/s, {info['rps'] / jwt['rps']:.2f}× the `warn` figure "
            f"({info['cpu_us']:.1f} vs {jwt['cpu_us']:.1f} CPU µs per request)."
        )
    unc = rows.get("gw-jwt-uncached")
    if jwt and unc:
        lines.append(
            f"- With the signature checked on (almost) every request: {unc['rps']:,.0f} req/s, "
            f"{unc['rps'] / nginx['rps']:.2f}× nginx, {unc['cpu_us']:.1f} CPU µs per request."
        )
    # The aim says MB; VmRSS is in KiB, so compare in bytes: 20 MB = 20,000,000 bytes.
    limit_mib = 20e6 / 2**20
    verdict = "**met**" if rss_start < limit_mib and rss_after < limit_mib else "**not met**"
    lines.append(
        f"- Aim: idle memory under 20 MB ({limit_mib:.1f} MiB) — {verdict} after start and after "
        f"the 64-connection runs: {rss_start:.1f} MiB and {rss_after:.1f} MiB (peak {hwm:.1f} MiB)."
        + (
            f" **Not met after the {meta['burst_connections']}-connection burst**: "
            f"{rss_burst:.1f} MiB idle."
            if rss_burst >= limit_mib
            else f" Still under it after the {meta['burst_connections']}-connection burst: "
            f"{rss_burst:.1f} MiB."
        )
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


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
