#!/usr/bin/env python3
"""Turns a bench/rules.sh results directory into the Markdown section
`## MCP rules and list filtering (bench/rules.sh)`.

    rules_report.py RESULTS_DIR [BENCHMARKS.md]

Prints the section. With a file, also writes it there: from the heading to the marker
`<!-- bench:rules:end -->` (or, without the marker, to the next `## ` heading or the end of
the file) is replaced if present, appended if absent; nothing else in the file changes, so
hand-written notes after the marker are kept. Reports what was measured; asserts nothing.
"""

import re
import sys
from pathlib import Path

HEADING = "## MCP rules and list filtering (bench/rules.sh)"
END = "<!-- bench:rules:end -->"
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}

PAIRS = [  # (kind, label)
    ("call", "`tools/call` (allowed tool, ~100-byte answer)"),
    ("json", "`tools/list`, 200 tools, `application/json`"),
    ("sse", "`tools/list`, 200 tools, `text/event-stream`"),
]


def ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise SystemExit(f"unknown wrk duration {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(text):
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


def fmt_ms(v):
    return f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms"


def kib(b):
    return f"{int(b) / 1024:.1f} KiB" if int(b) >= 1024 else f"{int(b)} B"


def build(results: Path) -> str:
    meta = dict(
        line.split("=", 1)
        for line in (results / "meta.env").read_text().splitlines()
        if "=" in line
    )
    clk = int(meta["clk_tck"])
    n_rounds = int(meta["rounds"])
    runs = {}
    for line in (results / "cases.tsv").read_text().splitlines():
        case, rnd, cpu, up_cpu, wrk_cpu, busy, steal = line.split("\t")
        data = parse_wrk((results / f"{case}.r{rnd}.wrk").read_text())
        user, system = (float(x) for x in wrk_cpu.split())
        n = data["requests"]
        data.update(
            round=int(rnd),
            cpu_us=int(cpu) / clk * 1e6 / n,
            up_cpu_us=int(up_cpu) / clk * 1e6 / n,
            wrk_cpu_us=(user + system) * 1e6 / n,
            machine_us=int(busy) / clk * 1e6 / n,
            steal=int(steal),
        )
        runs.setdefault(case, []).append(data)
    rows = {}
    for case, rs in runs.items():
        ordered = sorted(rs, key=lambda r: r["rps"])
        row = dict(ordered[(len(ordered) - 1) // 2])  # the median round (lower median if even)
        row["rps_min"], row["rps_max"] = ordered[0]["rps"], ordered[-1]["rps"]
        rows[case] = row
    steal = sum(r["steal"] for rs in runs.values() for r in rs)
    busy = int(meta["quiet_busy_pct"])
    answer = {
        "p-call": meta["call_answer_bytes"],
        "r-call": meta["call_answer_bytes"],
        "p-json": meta["answer_bytes_p_json"],
        "r-json": meta["answer_bytes_r_json"],
        "p-sse": meta["answer_bytes_p_sse"],
        "r-sse": meta["answer_bytes_r_sse"],
    }

    L = [HEADING, ""]
    L.append(
        "Written by `bench/rules.sh` (edits down to the end marker are overwritten when it runs "
        "with `BENCH_OUT`). Measurement only: no timing is asserted. What a route with "
        "`[routes.mcp]` rules costs next to **the same route without them**, through the same "
        "gateway to the same upstream, with the same API key: the rule check on a `tools/call`, "
        "and the filtering of a 200-tool `tools/list` answer, JSON and event stream."
    )
    L.append("")
    L.append(
        f"Recorded {meta['date']} at commit `{meta['commit']}` ({meta['rustc']}). "
        f"Machine: **{meta['nproc']} cores** ({meta['cpu']}), {meta['mem']} RAM, "
        f"{meta['kernel']}; {meta['wrk']}, nginx {meta['nginx']}. "
        f"wrk `-t{meta['threads']} -c{meta['connections']} -d{meta['duration']} --latency` "
        f"after a {meta['warmup']} warm-up, per case. "
        + (
            "One round: each pair ran once, back to back (without rules first). "
            if n_rounds == 1
            else f"{n_rounds} rounds: each pair ran back to back once per round, the case with "
            "rules first in every other round; each row is the round with the median req/s "
            "and the range column shows the slowest and fastest round. "
        )
        + (
            f"**CPU busy before the first run (other load on the machine): {busy}% — "
            "the figures are low and noisy.** "
            if busy > 10
            else f"CPU busy before the first run (other load on the machine): {busy}%; "
        )
        + f"CPU steal during the runs: {steal / clk:.1f} s. wrk, the upstream nginx and the "
        f"gateway share the same {meta['nproc']} cores. Run: `{meta['command']}`."
    )
    L.append("")
    head = (
        "| Case | rules | req/s | p50 | p99 | gateway CPU µs/req | upstream CPU µs/req "
        "| machine CPU µs/req | answer to the client |"
    )
    sep = "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    if n_rounds > 1:
        head += " req/s range |"
        sep += "---:|"
    L += [head, sep]
    for kind, label in PAIRS:
        for prefix, rules in (("p", "no"), ("r", "**yes**")):
            r = rows[f"{prefix}-{kind}"]
            line = (
                f"| {label} | {rules} | {r['rps']:,.0f} | {fmt_ms(r['p50'])} | {fmt_ms(r['p99'])} "
                f"| {r['cpu_us']:.1f} | {r['up_cpu_us']:.1f} | {r['machine_us']:.1f} "
                f"| {kib(answer[f'{prefix}-{kind}'])} |"
            )
            if n_rounds > 1:
                line += f" {r['rps_min']:,.0f} – {r['rps_max']:,.0f} |"
            L.append(line)
    L.append("")
    L.append(
        "*gateway CPU* is the gateway process's user+system time (`/proc/<pid>/stat`) per "
        "completed request; *upstream CPU* the same for the upstream nginx (master and workers); "
        "*machine CPU* all busy CPU time of the machine (wrk, upstream, gateway, the kernel's "
        "softirq work for loopback TCP, anything else) per request. Clock ticks are "
        f"1/{clk} s, so a short run's CPU figures are rounded. *answer to the client* is the "
        "body the gateway sent, measured with `curl` before the runs."
    )
    L.append("")
    L.append("Rules against no rules (the median rows above; above 1× = more/slower with rules):")
    L.append("")
    head = (
        "| Case | req/s | p50 | p99 | gateway CPU µs/req | gateway CPU added per request "
        "| machine CPU µs/req |"
    )
    sep = "|---|---:|---:|---:|---:|---:|---:|"
    if n_rounds > 1:
        head += " req/s ratio per round |"
        sep += "---|"
    L += [head, sep]
    ratios = {}
    for kind, label in PAIRS:
        p, r = rows[f"p-{kind}"], rows[f"r-{kind}"]
        ratios[kind] = (r["rps"] / p["rps"], r["cpu_us"] - p["cpu_us"], r["cpu_us"] / p["cpu_us"])
        line = (
            f"| {label} | {r['rps'] / p['rps']:.2f}× | {r['p50'] / p['p50']:.2f}× "
            f"| {r['p99'] / p['p99']:.2f}× | {r['cpu_us'] / p['cpu_us']:.2f}× "
            f"| {r['cpu_us'] - p['cpu_us']:+.1f} µs | {r['machine_us'] / p['machine_us']:.2f}× |"
        )
        if n_rounds > 1:
            per_round = []
            for rnd in range(1, n_rounds + 1):
                pr = next(x for x in runs[f"p-{kind}"] if x["round"] == rnd)
                rr = next(x for x in runs[f"r-{kind}"] if x["round"] == rnd)
                per_round.append(f"{rr['rps'] / pr['rps']:.2f}×")
            line += " " + ", ".join(per_round) + " |"
        L.append(line)
    L.append("")
    call, json_, sse = ratios["call"], ratios["json"], ratios["sse"]
    L.append(
        f"In short: with rules, `tools/call` keeps {call[0]:.2f}× of its req/s "
        f"({call[1]:+.1f} µs of gateway CPU per call, {call[2]:.2f}×); a filtered 200-tool list "
        f"keeps {json_[0]:.2f}× as JSON ({json_[1]:+.1f} µs) and {sse[0]:.2f}× as an event "
        f"stream ({sse[1]:+.1f} µs), where the caller sees {meta['tools_visible']} of "
        f"{meta['tools_all']} tools."
    )
    L.append("")
    L.append("How it was measured:")
    L.append("")
    L += [
        "- **Upstream**: one nginx (`worker_processes auto`). `tools/call` is answered by "
        "`return 200` with a fixed 102-byte JSON-RPC result; the lists are two static files "
        "(`error_page 405 =200 $uri` makes nginx serve a file to a POST): the answer to "
        "`tools/list` with 200 tools (each with a title, a description and a small input "
        f"schema; {kib(meta['answer_bytes_p_json'])}) as `application/json`, and as "
        "`text/event-stream` a notification event followed by the same answer as one event. "
        "The JSON-RPC id is 1 in every request and answer. The fixtures and the answer checks "
        "are `bench/rules_tools.py`.",
        "- **Gateway**: one instance, `[log] level = \"warn\"`, defaults otherwise; six routes "
        "with `verifiers = [\"api_keys\"]` and `scopes = [\"mcp:tools\"]` — for each of the "
        "three upstream answers one route without `[routes.mcp]` (the body streams through "
        "untouched) and one with `default = \"deny\"` and five rules, in this order: deny "
        "`delete_*`; `deploy` needs scope `admin`; `ops_*` needs group `ops`; `search_*` needs "
        "scope `mcp:search`; allow `get_*` and `list_*`. The key's principal has scope "
        "`mcp:tools` and no groups.",
        "- **Requests**: `POST` with `Content-Type: application/json`, "
        "`Accept: application/json, text/event-stream` and the key, from a wrk Lua script; "
        f"`tools/call` of `get_item_000` ({meta['call_request_bytes']} bytes: the first four rules "
        "are tried and the fifth allows it) and `tools/list` "
        f"({meta['list_request_bytes']} bytes).",
        "- **Checked before measuring** (the run stops otherwise): the upstream's answers; "
        "both call routes answer the upstream's exact body and 401 without the key; without "
        "rules `delete_item_000` passes, with them it gets the JSON-RPC error -32001 naming "
        "`no-deletes`, `internal_item_000` is refused by the default, and `deploy` gets 403 "
        "with an `insufficient_scope` challenge; without rules both lists arrive whole (200 "
        f"tools); with them exactly the {meta['tools_visible']} expected tools remain "
        "(`get_*`, `list_*`, and `search_*` and `deploy` which the caller could step up to; "
        "`delete_*`, `ops_*` and `internal_*` hidden), in order, with the content type kept "
        "and the stream's notification event unchanged. After the runs the filtered stream "
        "is checked once more. wrk reporting any non-2xx answer or socket error stops the run.",
    ]
    L.append("")
    L.append("What the numbers mean, and what they do not:")
    L.append("")
    L += [
        "- **Ratios of this run only.** Both cases of a pair ran back to back on the same "
        "gateway; compare within a pair. On this kind of machine a single case varies by "
        "±10% from run to run; a req/s ratio within ~0.9–1.1× is not a difference. The "
        "*gateway CPU added per request* is the steadier figure, but on a short run it rests "
        "on a few hundred clock ticks.",
        "- **A filtered list is also a smaller answer.** With rules the client receives "
        f"{kib(meta['answer_bytes_r_json'])} instead of {kib(meta['answer_bytes_p_json'])} "
        "(JSON), so wrk and the kernel have less to move: the machine CPU column credits the "
        "rules case with that. The gateway, on the other hand, reads the whole answer, parses "
        "it into a `serde_json::Value`, asks the rules about each of the 200 tools and writes "
        "it again; without rules it copies bytes. Framing towards the client (without → with "
        f"rules): JSON {meta.get('framing_p_json')} → {meta.get('framing_r_json')}, event stream "
        f"{meta.get('framing_p_sse')} → {meta.get('framing_r_sse')}.",
        "- **Not the rule count alone.** A route with `[routes.mcp]` also reads the request body "
        "whole before forwarding it (the exact bytes) and parses it as JSON-RPC; the call pair "
        "measures all of that together with trying five rules, not a single rule. The list "
        "pairs include the same request-side work (a `tools/list` body) plus the filter.",
        "- **2 cores, shared, loopback.** wrk, the upstream and the gateway compete for the "
        "same cores; what the gateway spends is missing from wrk and the upstream, so req/s "
        "ratios understate or overstate the gateway's own cost depending on which process "
        "is the bottleneck. No TLS, keep-alive everywhere, 64 requests in flight (latency ≈ "
        "64 / throughput).",
        "- **Synthetic lists.** 200 tools of ~330 bytes each, identical in shape. Real servers' "
        "schemas vary; the filter's cost grows with the answer's size (it parses and "
        "re-serialises all of it) and with the number of items (one rule evaluation each).",
    ]
    if int(meta.get("gateway_log_lines", "0")):
        L.append(
            f"- The gateway wrote {meta['gateway_log_lines']} log lines at `warn` or above "
            "during the run (start-up configuration diagnostics left out); see `BENCH_KEEP=1`."
        )
    L.append("")
    L.append(END)
    L.append("")
    return "\n".join(L)


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
    marker = next((i for i in range(start + 1, len(lines)) if lines[i].rstrip("\n") == END), None)
    if marker is not None:
        end = marker + 1
        # The section ends with the marker and one blank line.
        if end < len(lines) and not lines[end].strip():
            end += 1
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    tail = "".join(lines[end:])
    path.write_text("".join(lines[:start]) + section + tail)


def main(argv):
    if len(argv) not in (2, 3):
        sys.exit(__doc__)
    section = build(Path(argv[1]))
    sys.stdout.write(section)
    if len(argv) == 3:
        write_section(Path(argv[2]), section)


if __name__ == "__main__":
    main(sys.argv)
