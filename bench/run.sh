#!/usr/bin/env bash
# Throughput and latency of mcp-auth-gateway against the upstream direct and nginx proxy_pass.
#
#   bench/run.sh                 # full run (~2 min + build), rewrites the results in BENCHMARKS.md
#   BENCH_DURATION=5s bench/run.sh
#
# Knobs (environment): BENCH_DURATION (10s), BENCH_WARMUP (2s), BENCH_THREADS (2),
# BENCH_CONNECTIONS (64), BENCH_ROUNDS (1; with more, every case runs once per round, in the
# same order, and the report shows the median round and the range), BENCH_OUT (BENCHMARKS.md
# at the repo root), BENCH_KEEP=1 keeps the temporary directory (configs, logs, raw wrk
# output) for inspection.
#
# nginx runs with `worker_processes auto` (2 on a 2-core machine, like the gateway's default
# of one Tokio worker per core). The method and the caveats are in BENCHMARKS.md.
#
# Everything listens on 127.0.0.1 on ports that were free a moment ago; every file lives in a
# mktemp directory; every process started here is stopped on exit. Nothing here asserts a
# timing: a target that answers anything but the expected status stops the run instead of
# being measured.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
THREADS=${BENCH_THREADS:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
ROUNDS=${BENCH_ROUNDS:-1}
OUT=${BENCH_OUT:-$ROOT/BENCHMARKS.md}
UNCACHED_TOKENS=100

for tool in wrk nginx openssl python3 curl cargo git; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 1; }
done

WORK=$(mktemp -d -t mcp-gw-bench.XXXXXX)
PIDS=()

cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        echo "bench: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
    echo "bench: FAILED: $*" >&2
    exit 1
}

log() { echo "bench: $*" >&2; }

# ---------------------------------------------------------------------------------------------
# Build.

log "building the gateway (release)"
(cd "$ROOT" && cargo build --release --locked)
GATEWAY_BIN="$ROOT/target/release/mcp-auth-gateway"
[[ -x $GATEWAY_BIN ]] || die "no binary at $GATEWAY_BIN"

# ---------------------------------------------------------------------------------------------
# Ports: ask the kernel for free ones, all at once so they differ.

read -r UP_PORT NGINX_PORT GW_PORT GW_INFO_PORT GW_NOCACHE_PORT < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)

# ---------------------------------------------------------------------------------------------
# Upstream: an nginx server block answering every request with a fixed ~100-byte JSON body.
# The nginx proxy is a second, separate nginx instance, so "nginx proxy_pass" and "gateway"
# are both one extra process in front of the same upstream.

BODY='{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hello from the bench upstream"}]}}'

nginx_common() { # $1 = name
    cat <<EOF
worker_processes auto;
daemon off;
pid $WORK/$1/nginx.pid;
error_log $WORK/$1/error.log warn;
events { worker_connections 4096; }
EOF
}

nginx_http_common() { # $1 = name
    cat <<EOF
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path $WORK/$1/client_body;
    proxy_temp_path $WORK/$1/proxy;
    fastcgi_temp_path $WORK/$1/fastcgi;
    uwsgi_temp_path $WORK/$1/uwsgi;
    scgi_temp_path $WORK/$1/scgi;
EOF
}

mkdir -p "$WORK/upstream" "$WORK/nginx"
{
    nginx_common upstream
    echo "http {"
    nginx_http_common upstream
    cat <<EOF
    server {
        listen 127.0.0.1:$UP_PORT;
        location / {
            default_type application/json;
            return 200 '$BODY';
        }
    }
}
EOF
} >"$WORK/upstream/nginx.conf"

{
    nginx_common nginx
    echo "http {"
    nginx_http_common nginx
    cat <<EOF
    upstream bench_upstream {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$WORK/nginx/nginx.conf"

start_nginx() { # $1 = name; sets LAST_PID
    nginx -t -q -p "$WORK/$1" -e "$WORK/$1/error.log" -c "$WORK/$1/nginx.conf" \
        || die "nginx config $1 is invalid"
    nginx -p "$WORK/$1" -e "$WORK/$1/error.log" -c "$WORK/$1/nginx.conf" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

start_nginx upstream
UP_PID=$LAST_PID
start_nginx nginx
NGINX_PID=$LAST_PID

# ---------------------------------------------------------------------------------------------
# Credentials: an API key (hashed by the gateway's own `hash-key`) and an ES256 key whose
# public half goes into a local JWKS file; tokens are minted by bench/es256.py with openssl.

API_KEY="bench-$(openssl rand -hex 16)"
API_KEY_HASH=$(printf '%s' "$API_KEY" | "$GATEWAY_BIN" hash-key)
[[ $API_KEY_HASH == sha256:* ]] || die "hash-key printed $API_KEY_HASH"

ISSUER="https://issuer.bench.invalid"
KID="bench-es256"
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/es256.pem" 2>/dev/null
python3 "$BENCH/es256.py" jwks "$WORK/es256.pem" "$KID" >"$WORK/jwks.json"

mint() { # $1 = gateway port, $2 = count; prints tokens for that gateway's /jwt route
    local now
    now=$(date +%s)
    cat >"$WORK/claims-$1.json" <<EOF
{"iss":"$ISSUER","sub":"bench-user","aud":"http://127.0.0.1:$1/jwt",
 "iat":$now,"nbf":$now,"exp":$((now + 3600)),"scope":"mcp:tools","client_id":"bench-client",
 "email":"bench@example.com","jti":"bench"}
EOF
    python3 "$BENCH/es256.py" token "$WORK/es256.pem" "$KID" "$WORK/claims-$1.json" "$2"
}

JWT=$(mint "$GW_PORT" 1)
JWT_INFO=$(mint "$GW_INFO_PORT" 1)
mint "$GW_NOCACHE_PORT" "$UNCACHED_TOKENS" >"$WORK/tokens-uncached.txt"
BAD_JWT="${JWT%.*}.$(printf 'A%.0s' {1..86})"

# ---------------------------------------------------------------------------------------------
# Gateways: the same routes three times.
#   gw          log level warn (no audit line per request)          — the main rows
#   gw-info     log level info, format pretty: the shipped default   — one audit line per request
#   gw-nocache  warn, token_cache_entries = 1, for the uncached-JWT row

gateway_config() { # $1 = port, $2 = log level, $3 = token cache entries
    cat <<EOF
[server]
listen = ["127.0.0.1:$1"]
public_url = "http://127.0.0.1:$1"
allowed_hosts = ["127.0.0.1"]

[server.limits]
token_cache_entries = $3

[forward_auth]
enabled = true
path = "/verify"

[log]
format = "pretty"
level = "$2"

[[api_keys]]
id = "bench"
hash = "$API_KEY_HASH"
subject = "bench-user"
scopes = ["mcp:tools"]

[[issuers]]
id = "bench"
issuer = "$ISSUER"
jwks_file = "$WORK/jwks.json"
algorithms = ["ES256"]

[[routes]]
id = "open"
path = "/open"
upstream = "http://127.0.0.1:$UP_PORT/mcp"

[[routes]]
id = "key"
path = "/key"
upstream = "http://127.0.0.1:$UP_PORT/mcp"
verifiers = ["api_keys"]
scopes = ["mcp:tools"]

[[routes]]
id = "jwt"
path = "/jwt"
upstream = "http://127.0.0.1:$UP_PORT/mcp"
verifiers = ["bench"]
scopes = ["mcp:tools"]

[dangerous]
unauthenticated_routes = ["open"]
EOF
}

start_gateway() { # $1 = name, $2 = port, $3 = level, $4 = cache entries; sets LAST_PID
    gateway_config "$2" "$3" "$4" >"$WORK/$1.toml"
    "$GATEWAY_BIN" check --config "$WORK/$1.toml" >"$WORK/$1.check" 2>&1 \
        || { cat "$WORK/$1.check" >&2; die "gateway config $1 does not compile"; }
    env -u RUST_LOG "$GATEWAY_BIN" serve --config "$WORK/$1.toml" >"$WORK/$1.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

start_gateway gw "$GW_PORT" warn 100000
GW_PID=$LAST_PID
start_gateway gw-info "$GW_INFO_PORT" info 100000
GW_INFO_PID=$LAST_PID
start_gateway gw-nocache "$GW_NOCACHE_PORT" warn 1
GW_NOCACHE_PID=$LAST_PID

wait_ready() { # $1 = url, $2 = pid
    for _ in $(seq 100); do
        kill -0 "$2" 2>/dev/null || die "process $2 for $1 exited (logs in $WORK)"
        if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "$1 did not come up"
}

wait_ready "http://127.0.0.1:$UP_PORT/" "$UP_PID"
wait_ready "http://127.0.0.1:$NGINX_PORT/" "$NGINX_PID"
wait_ready "http://127.0.0.1:$GW_PORT/healthz" "$GW_PID"
wait_ready "http://127.0.0.1:$GW_INFO_PORT/healthz" "$GW_INFO_PID"
wait_ready "http://127.0.0.1:$GW_NOCACHE_PORT/healthz" "$GW_NOCACHE_PID"

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# Idle memory right after start: /healthz was the only request so far.
sleep 1
RSS_START_KB=$(rss_kb "$GW_PID")

# ---------------------------------------------------------------------------------------------
# Correctness first: every target must answer what we expect, or nothing is measured.

expect() { # $1 = expected status, $2 = expected body ("-" = any), $3 = url, then curl args
    local want=$1 body=$2 url=$3 got
    shift 3
    got=$(curl -sS -o "$WORK/expect.body" -w '%{http_code}' "$@" "$url") || die "curl $url failed"
    [[ $got == "$want" ]] || {
        cat "$WORK/expect.body" >&2
        die "$url answered $got, expected $want"
    }
    if [[ $body != - && $(cat "$WORK/expect.body") != "$body" ]]; then
        cat "$WORK/expect.body" >&2
        die "$url answered an unexpected body"
    fi
}

GW="http://127.0.0.1:$GW_PORT"
GW_HOST="127.0.0.1:$GW_PORT"
AUTH_KEY="Authorization: Bearer $API_KEY"
AUTH_JWT="Authorization: Bearer $JWT"

log "checking every target answers as expected"
expect 200 "$BODY" "http://127.0.0.1:$UP_PORT/mcp"
expect 200 "$BODY" "http://127.0.0.1:$NGINX_PORT/mcp"
for gw in "$GW" "http://127.0.0.1:$GW_INFO_PORT" "http://127.0.0.1:$GW_NOCACHE_PORT"; do
    expect 200 "$BODY" "$gw/open"
    expect 200 "$BODY" "$gw/key" -H "$AUTH_KEY"
    expect 401 - "$gw/key"
    expect 401 - "$gw/key" -H "Authorization: Bearer wrong-$API_KEY"
    expect 401 - "$gw/jwt" -H "Authorization: Bearer $BAD_JWT"
    expect 401 - "$gw/jwt" -H "$AUTH_KEY"
done
expect 200 "$BODY" "$GW/jwt" -H "$AUTH_JWT"
expect 200 "$BODY" "http://127.0.0.1:$GW_INFO_PORT/jwt" -H "Authorization: Bearer $JWT_INFO"
while read -r token; do
    expect 200 "$BODY" "http://127.0.0.1:$GW_NOCACHE_PORT/jwt" -H "Authorization: Bearer $token"
done <"$WORK/tokens-uncached.txt"
# A token minted for another gateway's resource must not pass here (the audience is checked).
expect 401 - "$GW/jwt" -H "Authorization: Bearer $JWT_INFO"
VERIFY_KEY=(-H "X-Forwarded-Method: GET" -H "X-Forwarded-Uri: /key" -H "X-Forwarded-Host: $GW_HOST" -H "$AUTH_KEY")
VERIFY_JWT=(-H "X-Forwarded-Method: GET" -H "X-Forwarded-Uri: /jwt" -H "X-Forwarded-Host: $GW_HOST" -H "$AUTH_JWT")
expect 200 "" "$GW/verify" "${VERIFY_KEY[@]}"
expect 200 "" "$GW/verify" "${VERIFY_JWT[@]}"
expect 401 - "$GW/verify" -H "X-Forwarded-Method: GET" -H "X-Forwarded-Uri: /jwt" -H "X-Forwarded-Host: $GW_HOST"

# ---------------------------------------------------------------------------------------------
# Measurements.

RESULTS="$WORK/results"
mkdir -p "$RESULTS"
: >"$RESULTS/cases.tsv"

cat >"$WORK/rotate.lua" <<EOF
-- Each request carries the next of $UNCACHED_TOKENS distinct tokens (one Lua state per thread).
local tokens = {}
for line in io.lines("$WORK/tokens-uncached.txt") do tokens[#tokens + 1] = line end
local i = 0
request = function()
    i = i % #tokens + 1
    return wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. tokens[i] })
end
EOF

cpu_ticks() { # utime + stime (clock ticks) of $1 and its direct children (nginx workers)
    local total=0 pid f
    for pid in "$1" $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        [[ -r /proc/$pid/stat ]] || continue
        read -r -a f < <(sed 's/^.*) //' "/proc/$pid/stat")
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

machine_ticks() { # "busy steal" clock ticks of all CPUs (busy = everything but idle and iowait)
    awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $9}' /proc/stat
}

# bench <id> <pid of the process under test> <url> [wrk args...]
bench() {
    local id=$1 pid=$2 url=$3 file
    shift 3
    file="$RESULTS/$id.r$ROUND"
    log "round $ROUND/$ROUNDS: wrk $id ($url)"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "$@" "$url" >"$file.warmup" 2>&1 \
        || die "wrk warm-up for $id failed: $(cat "$file.warmup")"
    if grep -q -E 'Non-2xx or 3xx responses|Socket errors' "$file.warmup"; then
        cat "$file.warmup" >&2
        die "$id: errors during warm-up"
    fi
    local cpu0 up0 m0 cpu1 up1 m1 wrk_cpu
    cpu0=$(cpu_ticks "$pid")
    up0=$(cpu_ticks "$UP_PID")
    m0=$(machine_ticks)
    wrk_cpu=$( { TIMEFORMAT='%U %S'; time wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url" \
        >"$file.wrk" 2>&1; } 2>&1) || die "wrk $id failed: $(cat "$file.wrk")"
    m1=$(machine_ticks)
    cpu1=$(cpu_ticks "$pid")
    up1=$(cpu_ticks "$UP_PID")
    if grep -q -E 'Non-2xx or 3xx responses|Socket errors' "$file.wrk"; then
        cat "$file.wrk" >&2
        die "$id: wrk saw error responses or socket errors; its numbers would be the speed of errors"
    fi
    grep -q '^Requests/sec:' "$file.wrk" || die "$id: no Requests/sec in wrk output"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$ROUND" "$((cpu1 - cpu0))" "$((up1 - up0))" \
        "$wrk_cpu" "$(( ${m1% *} - ${m0% *} ))" "$(( ${m1#* } - ${m0#* } ))" >>"$RESULTS/cases.tsv"
    sleep 1
}

# What else is using the machine: busy CPU over 2 quiet seconds before the first run.
q0=$(machine_ticks)
sleep 2
q1=$(machine_ticks)
QUIET_BUSY_PCT=$(( (${q1% *} - ${q0% *}) * 100 / (2 * $(getconf CLK_TCK) * $(nproc)) ))
if (( QUIET_BUSY_PCT > 10 )); then
    log "WARNING: ${QUIET_BUSY_PCT}% of the CPU was busy before the benchmark started; results will be low"
fi

for ROUND in $(seq "$ROUNDS"); do
    bench direct "$UP_PID" "http://127.0.0.1:$UP_PORT/mcp"
    bench nginx "$NGINX_PID" "http://127.0.0.1:$NGINX_PORT/mcp"
    bench gw-open "$GW_PID" "$GW/open"
    bench gw-key "$GW_PID" "$GW/key" -H "$AUTH_KEY"
    bench gw-jwt "$GW_PID" "$GW/jwt" -H "$AUTH_JWT"
    bench verify-key "$GW_PID" "$GW/verify" "${VERIFY_KEY[@]}"
    bench verify-jwt "$GW_PID" "$GW/verify" "${VERIFY_JWT[@]}"
    bench gw-jwt-info "$GW_INFO_PID" "http://127.0.0.1:$GW_INFO_PORT/jwt" -H "Authorization: Bearer $JWT_INFO"
    bench gw-jwt-uncached "$GW_NOCACHE_PID" "http://127.0.0.1:$GW_NOCACHE_PORT/jwt" -s "$WORK/rotate.lua"
done

# The info instance must really have logged one audit line per request, or its row is a lie.
INFO_REQUESTS=$(cat "$RESULTS"/gw-jwt-info.r*.wrk "$RESULTS"/gw-jwt-info.r*.warmup \
    | awk '/requests in/ {n += $1} END {print n + 0}')
INFO_AUDIT_LINES=$(grep -c 'request' "$WORK/gw-info.log" || true)
(( INFO_AUDIT_LINES >= INFO_REQUESTS )) \
    || die "the info-level gateway logged $INFO_AUDIT_LINES lines for $INFO_REQUESTS requests"

# Idle memory after the load: connections closed, give it a moment.
sleep 2
RSS_AFTER_KB=$(rss_kb "$GW_PID")
HWM_KB=$(hwm_kb "$GW_PID")

# Memory after many connections: a short burst of 1024 connections at /open (not in the
# table; its speed is not reported), then idle again. The gateway keeps up to 256 idle
# upstream connections for 90 s, so some of this is live; the rest is what the allocator keeps.
BURST_CONNECTIONS=1024
log "memory: ${BURST_CONNECTIONS}-connection burst at $GW/open"
ulimit -n 65536 2>/dev/null || true
wrk -t"$THREADS" -c"$BURST_CONNECTIONS" -d5s "$GW/open" >"$RESULTS/burst.wrk" 2>&1 \
    || die "wrk burst failed: $(cat "$RESULTS/burst.wrk")"
BURST_ERRORS=$(grep -E 'Non-2xx or 3xx responses|Socket errors' "$RESULTS/burst.wrk" | tr -s ' ' | paste -sd ';' - || true)
sleep 2
RSS_BURST_KB=$(rss_kb "$GW_PID")
HWM_BURST_KB=$(hwm_kb "$GW_PID")
INFO_LOG_BYTES=$(stat -c %s "$WORK/gw-info.log")
INFO_LOG_LINES=$(wc -l <"$WORK/gw-info.log")

# ---------------------------------------------------------------------------------------------
# Report.

cat >"$RESULTS/meta.env" <<EOF
date=$(date -u '+%Y-%m-%d %H:%M UTC')
commit=$(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ' (with uncommitted changes in src/)')
rustc=$(rustc --version)
nproc=$(nproc)
cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
kernel=$(uname -sr)
mem=$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
wrk=$(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}')
nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //')
clk_tck=$(getconf CLK_TCK)
threads=$THREADS
connections=$CONNECTIONS
duration=$DURATION
warmup=$WARMUP
uncached_tokens=$UNCACHED_TOKENS
rounds=$ROUNDS
quiet_busy_pct=$QUIET_BUSY_PCT
body_bytes=${#BODY}
rss_start_kb=$RSS_START_KB
rss_after_kb=$RSS_AFTER_KB
hwm_kb=$HWM_KB
burst_connections=$BURST_CONNECTIONS
burst_errors=$BURST_ERRORS
rss_burst_kb=$RSS_BURST_KB
hwm_burst_kb=$HWM_BURST_KB
info_log_bytes=$INFO_LOG_BYTES
info_log_lines=$INFO_LOG_LINES
info_log_requests=$INFO_REQUESTS
EOF

python3 "$BENCH/report.py" "$RESULTS" "$OUT"
log "results written to $OUT"
