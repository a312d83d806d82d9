#!/usr/bin/env bash
# Load and abuse bench for mcp-auth-gateway's hardening: many idle SSE streams, idle
# keep-alive connections, slow-loris and slow-POST, floods of invalid tokens, and unknown-kid
# floods against an HTTP JWKS. Measurement only: nothing here asserts a timing.
#
#   bench/abuse.sh                          # ~6 minutes once the release build is up to date
#   BENCH_OUT=BENCHMARKS.md bench/abuse.sh  # also writes the "Abuse and load" section there
#
# Scenarios (every process on 127.0.0.1, on ports that were free a moment ago):
#   1. BENCH_SSE_STREAMS (10000) idle SSE streams through the gateway to a Python asyncio
#      upstream that sends `: keep-alive` every 15 s; gateway VmRSS and open fds before,
#      while held (BENCH_SSE_HOLD s, default 17: one keep-alive round) and after closing;
#      then BENCH_SSE_ROUNDS - 1 (default 2) more rounds of as many streams, opened and
#      closed: is the memory reused, or does it grow round after round?
#      The gateway needs two fds per stream (client + upstream): if `ulimit -n` cannot be
#      raised far enough, the count is scaled down and the report says so.
#   2. wrk against an API-key route without and with BENCH_IDLE_CONNS (2000) idle keep-alive
#      connections (each sent one complete request first), on a gateway with
#      header_read_timeout = 60 s (= idle_timeout) so that they stay open during the run; then
#      a probe of BENCH_IDLE_PROBE (100) idle connections watched for BENCH_IDLE_PROBE_HOLD
#      (15) s on a gateway with default limits: when does it close them?
#   3. wrk while (a) BENCH_LORIS (200) sockets send one byte of a request head every
#      BENCH_SLOW_INTERVAL (5) s, watched for BENCH_LORIS_OBSERVE (40) s, and (b)
#      BENCH_SLOWPOST (50) sockets send a `content-length: 1000000` POST head and then one
#      body byte every 5 s, watched for BENCH_SLOWPOST_OBSERVE (80) s: when (whether) the
#      gateway closes them and what it answers.
#   4. floods of distinct invalid tokens (random JWT-shaped, well-formed with a random
#      signature, random opaque) at a route with API keys + an ES256 issuer (jwks_file):
#      req/s, gateway CPU seconds per 1,000 rejections, VmRSS before/after.
#   5. unknown-kid floods against issuers whose JWKS is served over HTTP by a Python server
#      counting hits: jwks_refetch_min_interval = "1s" and the default (30 s).
#
# Other knobs: BENCH_DURATION (10s: each measured wrk run), BENCH_WARMUP (2s),
# BENCH_THREADS (2), BENCH_CONNECTIONS (64), BENCH_NOFILE (65536: the `ulimit -n` asked for),
# BENCH_SSE_TIMEOUT (60: seconds per connect / response head), BENCH_BUILD (1; 0 = use the
# existing target/release binary), BENCH_KEEP=1 keeps the temporary directory (configs,
# logs, raw wrk output, JSON results), BENCH_OUT (unset: print only).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
THREADS=${BENCH_THREADS:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
WANT_NOFILE=${BENCH_NOFILE:-65536}
SSE_STREAMS=${BENCH_SSE_STREAMS:-10000}
SSE_TIMEOUT=${BENCH_SSE_TIMEOUT:-60}
SSE_HOLD=${BENCH_SSE_HOLD:-17}
SSE_ROUNDS=${BENCH_SSE_ROUNDS:-3}
IDLE_CONNS=${BENCH_IDLE_CONNS:-2000}
IDLE_PROBE=${BENCH_IDLE_PROBE:-100}
IDLE_PROBE_HOLD=${BENCH_IDLE_PROBE_HOLD:-15}
LORIS=${BENCH_LORIS:-200}
SLOWPOST=${BENCH_SLOWPOST:-50}
SLOW_INTERVAL=${BENCH_SLOW_INTERVAL:-5}
LORIS_OBSERVE=${BENCH_LORIS_OBSERVE:-40}
SLOWPOST_OBSERVE=${BENCH_SLOWPOST_OBSERVE:-80}
BUILD=${BENCH_BUILD:-1}
OUT=${BENCH_OUT:-}
if [[ -n $OUT && $OUT != /* ]]; then OUT="$PWD/$OUT"; fi

for tool in wrk nginx openssl python3 curl; do
    command -v "$tool" >/dev/null || { echo "abuse: $tool is required (apt-get install -y $tool)" >&2; exit 1; }
done

WORK=$(mktemp -d -t mcp-gw-abuse.XXXXXX)
RES="$WORK/results"
mkdir -p "$RES"
PIDS=()

stop_pid() { # $1 = pid: TERM, wait up to 5 s, then KILL
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        stop_pid "$pid"
    done
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        echo "abuse: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
    echo "abuse: FAILED: $*" >&2
    exit 1
}
log() { echo "abuse: $(date +%T) $*" >&2; }
metric() { printf '%s=%s\n' "$1" "$2" >>"$RES/metrics.env"; }

secs() { # "10s" / "2m" / "500ms" / "7" -> whole seconds (at least 1)
    local v=$1
    case $v in
        *ms) echo 1 ;;
        *s) echo "${v%s}" ;;
        *m) echo $(( ${v%m} * 60 )) ;;
        *) echo "$v" ;;
    esac
}
DURATION_S=$(secs "$DURATION")
WARMUP_S=$(secs "$WARMUP")

# ---------------------------------------------------------------------------------------------
# Build, file descriptors, ports.

if [[ $BUILD == 1 ]]; then
    log "building the gateway (release)"
    (cd "$ROOT" && nice -n 10 cargo build --release --locked)
fi
GATEWAY_BIN="$ROOT/target/release/mcp-auth-gateway"
[[ -x $GATEWAY_BIN ]] || die "no binary at $GATEWAY_BIN"

# Every process started below inherits this limit. The gateway needs two per SSE stream.
ulimit -n "$WANT_NOFILE" 2>/dev/null || {
    hard=$(ulimit -Hn)
    [[ $hard == unlimited ]] && hard=$WANT_NOFILE
    ulimit -n "$hard" 2>/dev/null || true
}
NOFILE=$(ulimit -n)
NOFILE_HARD=$(ulimit -Hn)
metric nofile_wanted "$WANT_NOFILE"
metric nofile "$NOFILE"
metric nofile_hard "$NOFILE_HARD"
SSE_N=$SSE_STREAMS
SSE_FIT=$(( (NOFILE - 256) / 2 ))
if (( SSE_N > SSE_FIT )); then
    log "ulimit -n is $NOFILE (hard limit $NOFILE_HARD, wanted $WANT_NOFILE): scaling the SSE streams from $SSE_N down to $SSE_FIT"
    SSE_N=$SSE_FIT
fi
metric sse_requested "$SSE_STREAMS"
metric sse_n "$SSE_N"
(( IDLE_CONNS + CONNECTIONS + 256 < NOFILE )) || die "ulimit -n $NOFILE is too low for $IDLE_CONNS idle connections"

read -r UP_PORT PY_PORT JWKS_PORT GW_SSE_PORT GW_IDLE_PORT GW_MAIN_PORT GW_AUTH_PORT GW_J1_PORT GW_J30_PORT < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(9)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)

# ---------------------------------------------------------------------------------------------
# Upstreams: nginx `return 200` (for wrk), the Python SSE / slow-body upstream, and a Python
# JWKS server counting hits.

BODY='{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hello from the bench upstream"}]}}'
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path $WORK/nginx/client_body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    server {
        listen 127.0.0.1:$UP_PORT;
        location / {
            default_type application/json;
            return 200 '$BODY';
        }
    }
}
EOF
nginx -t -q -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" || die "nginx config is invalid"
nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" &
UP_PID=$!
PIDS+=("$UP_PID")

# Credentials: an API key (hashed by the gateway's own `hash-key`) and an ES256 key whose
# public half is the JWKS (file and HTTP); tokens are minted by bench/es256.py.
API_KEY="abuse-$(openssl rand -hex 16)"
API_KEY_HASH=$(printf '%s' "$API_KEY" | "$GATEWAY_BIN" hash-key)
[[ $API_KEY_HASH == sha256:* ]] || die "hash-key printed $API_KEY_HASH"
ISSUER="https://issuer.abuse.invalid"
KID="abuse-es256"
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/es256.pem" 2>/dev/null
python3 "$BENCH/es256.py" jwks "$WORK/es256.pem" "$KID" >"$WORK/jwks.json"

mint() { # $1 = gateway port; prints one valid token for its /mcp route
    local now
    now=$(date +%s)
    cat >"$WORK/claims-$1.json" <<EOF
{"iss":"$ISSUER","sub":"abuse-user","aud":"http://127.0.0.1:$1/mcp",
 "iat":$now,"nbf":$now,"exp":$((now + 3600)),"scope":"mcp:tools","client_id":"abuse-client","jti":"abuse"}
EOF
    python3 "$BENCH/es256.py" token "$WORK/es256.pem" "$KID" "$WORK/claims-$1.json" 1
}

python3 "$BENCH/abuse_upstream.py" --port "$PY_PORT" --keepalive 15 >"$WORK/py-upstream.log" 2>&1 &
PY_PID=$!
PIDS+=("$PY_PID")
python3 "$BENCH/abuse_upstream.py" --port "$JWKS_PORT" --jwks "$WORK/jwks.json" >"$WORK/py-jwks.log" 2>&1 &
JWKS_PID=$!
PIDS+=("$JWKS_PID")

wait_url() { # $1 = url, $2 = pid
    for _ in $(seq 100); do
        kill -0 "$2" 2>/dev/null || die "process $2 for $1 exited (logs in $WORK; BENCH_KEEP=1 keeps them)"
        if curl -sS -o /dev/null "$1" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "$1 did not come up"
}
wait_url "http://127.0.0.1:$UP_PORT/" "$UP_PID"
wait_url "http://127.0.0.1:$PY_PORT/stats" "$PY_PID"
wait_url "http://127.0.0.1:$JWKS_PORT/stats" "$JWKS_PID"

# ---------------------------------------------------------------------------------------------
# Gateways: one per scenario, started when it begins and stopped when it ends.

gateway_config() { # $1 = port, $2 = issuers and routes (TOML), $3 = more [server.limits] lines
    cat <<EOF
[server]
listen = ["127.0.0.1:$1"]
public_url = "http://127.0.0.1:$1"

[server.limits]
max_connections = 20000
max_connections_per_ip = 0
shutdown_grace = "1s"
${3:-}

[log]
level = "warn"
format = "json"

[[api_keys]]
id = "bench"
hash = "$API_KEY_HASH"
subject = "bench"
scopes = []

$2
EOF
}

start_gateway() { # $1 = name, $2 = port, $3 = issuers and routes, $4 = more limits; sets LAST_PID
    gateway_config "$2" "$3" "${4:-}" >"$WORK/$1.toml"
    "$GATEWAY_BIN" check --config "$WORK/$1.toml" >"$WORK/$1.check" 2>&1 \
        || { cat "$WORK/$1.check" >&2; die "gateway config $1 does not compile"; }
    env -u RUST_LOG "$GATEWAY_BIN" serve --config "$WORK/$1.toml" >"$WORK/$1.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    wait_url "http://127.0.0.1:$2/healthz" "$LAST_PID"
}

stop_gateway() { # $1 = name, $2 = pid: stop it and keep its warnings for the report
    stop_pid "$2"
    cp "$WORK/$1.log" "$RES/$1.log"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }
threads_of() { awk '/^Threads:/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { # utime + stime of $1, in clock ticks
    local f
    read -r -a f < <(sed 's/^.*) //' "/proc/$1/stat")
    echo $((f[11] + f[12]))
}
snapshot() { # $1 = metric prefix, $2 = pid: VmRSS, VmHWM, fds, CPU ticks
    metric "$1_rss_kb" "$(rss_kb "$2")"
    metric "$1_hwm_kb" "$(hwm_kb "$2")"
    metric "$1_fds" "$(fds "$2")"
    metric "$1_ticks" "$(cpu_ticks "$2")"
}

wait_file() { # $1 = file, $2 = seconds, $3 = pid that writes it
    local deadline=$((SECONDS + $2))
    while [[ ! -s $1 ]]; do
        kill -0 "$3" 2>/dev/null || die "process $3 exited before writing $1 (see $WORK)"
        (( SECONDS < deadline )) || die "no $1 within $2 s"
        sleep 0.2
    done
}

wait_exit() { # $1 = pid, $2 = seconds: wait for a helper to finish (bounded)
    local deadline=$((SECONDS + $2))
    while kill -0 "$1" 2>/dev/null; do
        (( SECONDS < deadline )) || die "process $1 still running after $2 s"
        sleep 0.2
    done
    wait "$1" || die "process $1 failed (see $WORK)"
}

# run_wrk <name> <pid of the gateway> <url> [wrk args...]: one measured run, CPU ticks of the
# gateway around it. Never asserts anything about the result: it is parsed by the report.
# Arguments after `--` go to the wrk Lua script (wrk wants them after the URL).
split_args() { # sets OPTS and SARGS from "$@"
    OPTS=()
    SARGS=()
    while (( $# )); do
        [[ $1 == -- ]] && { SARGS=("$@"); break; }
        OPTS+=("$1")
        shift
    done
}
run_wrk() {
    local name=$1 pid=$2 url=$3 t0 t1
    shift 3
    split_args "$@"
    log "wrk $name: $url ${SARGS[*]:0:2}"
    t0=$(cpu_ticks "$pid")
    metric "${name}_rss_before_kb" "$(rss_kb "$pid")"
    metric "${name}_hwm_before_kb" "$(hwm_kb "$pid")"
    timeout $((DURATION_S + 60)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "${OPTS[@]}" "$url" "${SARGS[@]}" \
        >"$RES/$name.wrk" 2>&1 || die "wrk $name failed: $(cat "$RES/$name.wrk")"
    t1=$(cpu_ticks "$pid")
    metric "${name}_ticks" "$((t1 - t0))"
    metric "${name}_rss_after_kb" "$(rss_kb "$pid")"
    metric "${name}_hwm_after_kb" "$(hwm_kb "$pid")"
    metric "${name}_fds_after" "$(fds "$pid")"
}

warm() { # <url> [wrk args...]: a short unmeasured run
    local url=$1
    shift
    split_args "$@"
    timeout $((WARMUP_S + 60)) wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "${OPTS[@]}" "$url" "${SARGS[@]}" >"$WORK/warmup.wrk" 2>&1 \
        || die "wrk warm-up failed: $(cat "$WORK/warmup.wrk")"
}

expect() { # $1 = expected status, $2 = url, then curl args
    local want=$1 url=$2 got
    shift 2
    got=$(curl -sS -o "$WORK/expect.body" -w '%{http_code}' --max-time 10 "$@" "$url") || die "curl $url failed"
    [[ $got == "$want" ]] || { cat "$WORK/expect.body" >&2; die "$url answered $got, expected $want"; }
}

AUTH_KEY="Authorization: Bearer $API_KEY"

q0=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat)
sleep 2
q1=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat)
metric quiet_busy_pct $(( (q1 - q0) * 100 / (2 * $(getconf CLK_TCK) * $(nproc)) ))

# ---------------------------------------------------------------------------------------------
# 1. Idle SSE streams.

log "scenario 1: $SSE_N idle SSE streams"
start_gateway gw-sse "$GW_SSE_PORT" "
[[routes]]
id = \"mcp\"
path = \"/mcp\"
upstream = \"http://127.0.0.1:$PY_PORT/mcp\"
verifiers = [\"api_keys\"]
"
GW_SSE_PID=$LAST_PID
# One stream first: the head must arrive with the right type (curl stops after 2 s).
head=$(curl -sS -o /dev/null -w '%{http_code} %{content_type}' --max-time 2 -H "$AUTH_KEY" \
    -H 'Accept: text/event-stream' "http://127.0.0.1:$GW_SSE_PORT/mcp" 2>/dev/null || true)
[[ $head == "200 text/event-stream"* ]] || die "SSE through the gateway answered '$head'"
sleep 1
snapshot s1_before "$GW_SSE_PID"
metric s1_before_threads "$(threads_of "$GW_SSE_PID")"
python3 "$BENCH/abuse_client.py" sse --port "$GW_SSE_PORT" --n "$SSE_N" --key "$API_KEY" \
    --timeout "$SSE_TIMEOUT" --ready "$RES/s1-ready.json" --release "$WORK/s1-release" \
    --out "$RES/s1-sse.json" --hold-max $((SSE_HOLD + 120)) >"$WORK/s1-client.log" 2>&1 &
CLIENT_PID=$!
PIDS+=("$CLIENT_PID")
wait_file "$RES/s1-ready.json" $((2 * SSE_TIMEOUT + 60)) "$CLIENT_PID"
log "scenario 1: streams open: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["ok"], "ok, errors", d["errors"], "in", d["open_seconds"], "s")' "$RES/s1-ready.json")"
sleep 2
snapshot s1_held "$GW_SSE_PID"
curl -sS --max-time 5 "http://127.0.0.1:$PY_PORT/stats" >"$RES/s1-upstream-held.json"
sleep "$(( SSE_HOLD > 2 ? SSE_HOLD - 2 : 0 ))"
snapshot s1_held_late "$GW_SSE_PID"
touch "$WORK/s1-release"
wait_exit "$CLIENT_PID" 60
sleep 3
snapshot s1_closed "$GW_SSE_PID"
curl -sS --max-time 5 "http://127.0.0.1:$PY_PORT/stats" >"$RES/s1-upstream-closed.json"
# More rounds of the same count: is the memory kept after the first round reused (allocator
# retention: RSS levels off) or does it grow round after round (a leak)?
for round in $(seq 2 "$SSE_ROUNDS"); do
    log "scenario 1: round $round of $SSE_N streams"
    python3 "$BENCH/abuse_client.py" sse --port "$GW_SSE_PORT" --n "$SSE_N" --key "$API_KEY" \
        --timeout "$SSE_TIMEOUT" --ready "$RES/s1r$round-ready.json" --release "$WORK/s1r$round-release" \
        --out "$RES/s1r$round-sse.json" --hold-max $((2 * SSE_TIMEOUT + 60)) >"$WORK/s1r$round-client.log" 2>&1 &
    CLIENT_PID=$!
    PIDS+=("$CLIENT_PID")
    wait_file "$RES/s1r$round-ready.json" $((2 * SSE_TIMEOUT + 60)) "$CLIENT_PID"
    sleep 2
    snapshot "s1_round${round}_held" "$GW_SSE_PID"
    touch "$WORK/s1r$round-release"
    wait_exit "$CLIENT_PID" 60
    sleep 3
    snapshot "s1_round${round}_closed" "$GW_SSE_PID"
done
stop_gateway gw-sse "$GW_SSE_PID"

# ---------------------------------------------------------------------------------------------
# 2 and 3. Idle connections, slow-loris and slow-POST while wrk serves normal requests.

# Scenario 2 runs on a gateway whose header_read_timeout is raised to the idle_timeout (60 s):
# with the default 10 s the gateway closes an idle HTTP/1.1 keep-alive connection after 10 s
# (measured by the probe below), which would empty the idle set in the middle of the wrk run.
log "scenario 2: wrk with and without $IDLE_CONNS idle connections"
MAIN_ROUTES="
[[routes]]
id = \"mcp\"
path = \"/mcp\"
upstream = \"http://127.0.0.1:$UP_PORT/mcp\"
verifiers = [\"api_keys\"]

[[routes]]
id = \"slow\"
path = \"/slow\"
upstream = \"http://127.0.0.1:$PY_PORT/slow\"
verifiers = [\"api_keys\"]
"
start_gateway gw-idle "$GW_IDLE_PORT" "$MAIN_ROUTES" 'header_read_timeout = "60s"'
GW_IDLE_PID=$LAST_PID
IDLE_URL="http://127.0.0.1:$GW_IDLE_PORT/mcp"
expect 200 "$IDLE_URL" -H "$AUTH_KEY"
warm "$IDLE_URL" -H "$AUTH_KEY"
sleep 1
run_wrk s2_base "$GW_IDLE_PID" "$IDLE_URL" -H "$AUTH_KEY"
sleep 1
snapshot s2_before_idle "$GW_IDLE_PID"
python3 "$BENCH/abuse_client.py" idle --port "$GW_IDLE_PORT" --n "$IDLE_CONNS" --key "$API_KEY" \
    --timeout 30 --ready "$RES/s2-ready.json" --release "$WORK/s2-release" --out "$RES/s2-idle.json" \
    --hold-max $((DURATION_S + 120)) >"$WORK/s2-client.log" 2>&1 &
CLIENT_PID=$!
PIDS+=("$CLIENT_PID")
wait_file "$RES/s2-ready.json" 120 "$CLIENT_PID"
sleep 1
snapshot s2_idleconns "$GW_IDLE_PID"
run_wrk s2_idle "$GW_IDLE_PID" "$IDLE_URL" -H "$AUTH_KEY"
touch "$WORK/s2-release"
wait_exit "$CLIENT_PID" 60
stop_gateway gw-idle "$GW_IDLE_PID"

# Scenario 3 (and the idle probe) on a gateway with every limit at its default but the
# connection counts.
start_gateway gw-main "$GW_MAIN_PORT" "$MAIN_ROUTES"
GW_MAIN_PID=$LAST_PID
MAIN_URL="http://127.0.0.1:$GW_MAIN_PORT/mcp"
expect 200 "$MAIN_URL" -H "$AUTH_KEY"
expect 401 "$MAIN_URL"
expect 200 "http://127.0.0.1:$GW_MAIN_PORT/slow" -H "$AUTH_KEY" -H 'content-type: application/json' -d '{}'
log "idle probe: $IDLE_PROBE idle keep-alive connections, default limits, watched ${IDLE_PROBE_HOLD}s"
python3 "$BENCH/abuse_client.py" idle --port "$GW_MAIN_PORT" --n "$IDLE_PROBE" --key "$API_KEY" \
    --timeout 30 --ready "$RES/probe-ready.json" --out "$RES/probe-idle.json" \
    --hold-max "$IDLE_PROBE_HOLD" >"$WORK/probe-client.log" 2>&1 &
CLIENT_PID=$!
PIDS+=("$CLIENT_PID")
wait_exit "$CLIENT_PID" $((IDLE_PROBE_HOLD + 60))
warm "$MAIN_URL" -H "$AUTH_KEY"
sleep 1
run_wrk s3_base "$GW_MAIN_PID" "$MAIN_URL" -H "$AUTH_KEY"
sleep 1

log "scenario 3a: $LORIS slow-loris sockets (one byte every ${SLOW_INTERVAL}s) while wrk runs"
python3 "$BENCH/abuse_client.py" slow --mode loris --port "$GW_MAIN_PORT" --n "$LORIS" --key "$API_KEY" \
    --interval "$SLOW_INTERVAL" --observe "$LORIS_OBSERVE" --ready "$RES/s3a-ready.json" \
    --out "$RES/s3-loris.json" >"$WORK/s3a-client.log" 2>&1 &
CLIENT_PID=$!
PIDS+=("$CLIENT_PID")
wait_file "$RES/s3a-ready.json" 60 "$CLIENT_PID"
metric s3_loris_fds_at_start "$(fds "$GW_MAIN_PID")"
run_wrk s3_loris "$GW_MAIN_PID" "$MAIN_URL" -H "$AUTH_KEY"
wait_exit "$CLIENT_PID" $((LORIS_OBSERVE + 60))
metric s3_loris_fds_at_end "$(fds "$GW_MAIN_PID")"
sleep 1

log "scenario 3b: $SLOWPOST slow-POST sockets (one body byte every ${SLOW_INTERVAL}s) while wrk runs"
curl -sS --max-time 5 "http://127.0.0.1:$PY_PORT/stats" >"$RES/s3b-upstream-before.json"
python3 "$BENCH/abuse_client.py" slow --mode post --port "$GW_MAIN_PORT" --n "$SLOWPOST" --key "$API_KEY" \
    --interval "$SLOW_INTERVAL" --observe "$SLOWPOST_OBSERVE" --ready "$RES/s3b-ready.json" \
    --out "$RES/s3-post.json" >"$WORK/s3b-client.log" 2>&1 &
CLIENT_PID=$!
PIDS+=("$CLIENT_PID")
wait_file "$RES/s3b-ready.json" 60 "$CLIENT_PID"
POST_READY=$SECONDS
metric s3_post_fds_at_start "$(fds "$GW_MAIN_PID")"
run_wrk s3_post "$GW_MAIN_PID" "$MAIN_URL" -H "$AUTH_KEY"
curl -sS --max-time 5 "http://127.0.0.1:$PY_PORT/stats" >"$RES/s3b-upstream-during.json"
# A look shortly before the watch ends, while the client still holds its sockets.
while kill -0 "$CLIENT_PID" 2>/dev/null && (( SECONDS < POST_READY + SLOWPOST_OBSERVE - 3 )); do
    sleep 0.5
done
metric s3_post_late_at $((SECONDS - POST_READY))
metric s3_post_fds_late "$(fds "$GW_MAIN_PID")"
curl -sS --max-time 5 "http://127.0.0.1:$PY_PORT/stats" >"$RES/s3b-upstream-late.json"
wait_exit "$CLIENT_PID" $((SLOWPOST_OBSERVE + 60))
metric s3_post_fds_at_end "$(fds "$GW_MAIN_PID")"
curl -sS --max-time 5 "http://127.0.0.1:$PY_PORT/stats" >"$RES/s3b-upstream-after.json"
stop_gateway gw-main "$GW_MAIN_PID"

# ---------------------------------------------------------------------------------------------
# 4. Floods of distinct invalid tokens: API keys + ES256 issuer (jwks_file).

log "scenario 4: invalid-token floods"
start_gateway gw-auth "$GW_AUTH_PORT" "
[[issuers]]
id = \"es256\"
issuer = \"$ISSUER\"
jwks_file = \"$WORK/jwks.json\"
algorithms = [\"ES256\"]

[[routes]]
id = \"mcp\"
path = \"/mcp\"
upstream = \"http://127.0.0.1:$UP_PORT/mcp\"
verifiers = [\"api_keys\", \"es256\"]
"
GW_AUTH_PID=$LAST_PID
AUTH_URL="http://127.0.0.1:$GW_AUTH_PORT/mcp"
JWT_AUTH=$(mint "$GW_AUTH_PORT")
FORGED_PREFIX=${JWT_AUTH%.*}
expect 200 "$AUTH_URL" -H "$AUTH_KEY"
expect 200 "$AUTH_URL" -H "Authorization: Bearer $JWT_AUTH"
expect 401 "$AUTH_URL" -H "Authorization: Bearer $FORGED_PREFIX.$(openssl rand -base64 64 | tr -d '\n=' | tr '+/' '-_' | cut -c1-86)"
expect 401 "$AUTH_URL" -H "Authorization: Bearer $(openssl rand -base64 32 | tr -d '\n=' | tr '+/' '-_')"
sleep 1
snapshot s4_start "$GW_AUTH_PID"
for mode in jwt-garbage forged-sig opaque; do
    arg=()
    [[ $mode == forged-sig ]] && arg=("$FORGED_PREFIX")
    warm "$AUTH_URL" -s "$BENCH/abuse_flood.lua" -- "$mode" "${arg[@]}"
    sleep 1
    run_wrk "s4_${mode//-/_}" "$GW_AUTH_PID" "$AUTH_URL" -s "$BENCH/abuse_flood.lua" -- "$mode" "${arg[@]}"
    sleep 1
done
sleep 1
snapshot s4_end "$GW_AUTH_PID"
stop_gateway gw-auth "$GW_AUTH_PID"

# ---------------------------------------------------------------------------------------------
# 5. Unknown-kid floods against a JWKS served over HTTP.

log "scenario 5: unknown-kid floods, JWKS over HTTP"
jwks_gateway() { # $1 = port, $2 = JWKS name, $3 = extra issuer settings
    echo "
[[issuers]]
id = \"es256\"
issuer = \"$ISSUER\"
jwks_uri = \"http://127.0.0.1:$JWKS_PORT/jwks/$2\"
algorithms = [\"ES256\"]
$3

[[routes]]
id = \"mcp\"
path = \"/mcp\"
upstream = \"http://127.0.0.1:$UP_PORT/mcp\"
verifiers = [\"es256\"]
"
}
jwks_hits() { # $1 = JWKS name
    curl -sS --max-time 5 "http://127.0.0.1:$JWKS_PORT/stats" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["jwks_hits"].get(sys.argv[1], 0))' "$1"
}
for variant in j1:$GW_J1_PORT:fast:'jwks_refetch_min_interval = "1s"' j30:$GW_J30_PORT:default:''; do
    IFS=: read -r name port jwks extra <<<"$variant"
    start_gateway "gw-$name" "$port" "$(jwks_gateway "$port" "$jwks" "$extra")"
    pid=$LAST_PID
    url="http://127.0.0.1:$port/mcp"
    token=$(mint "$port")
    payload=${token#*.}
    payload=${payload%.*}
    # The first fetch happens in the background after start: wait for the keys (bounded).
    for _ in $(seq 50); do
        code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -H "Authorization: Bearer $token" "$url" || true)
        [[ $code == 200 ]] && break
        sleep 0.2
    done
    expect 200 "$url" -H "Authorization: Bearer $token"
    sleep 1
    metric "s5_${name}_hits_start" "$(jwks_hits "$jwks")"
    run_wrk "s5_$name" "$pid" "$url" -s "$BENCH/abuse_flood.lua" -- unknown-kid "$payload"
    metric "s5_${name}_hits_end" "$(jwks_hits "$jwks")"
    stop_gateway "gw-$name" "$pid"
done

# ---------------------------------------------------------------------------------------------
# Report.

cat >>"$RES/metrics.env" <<EOF
date=$(date -u '+%Y-%m-%d %H:%M UTC')
commit=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' (with uncommitted changes in src/)')
nproc=$(nproc)
cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
kernel=$(uname -sr)
mem=$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
wrk=$(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}')
clk_tck=$(getconf CLK_TCK)
threads=$THREADS
connections=$CONNECTIONS
duration=$DURATION
warmup=$WARMUP
idle_conns=$IDLE_CONNS
idle_probe_hold=$IDLE_PROBE_HOLD
loris=$LORIS
slowpost=$SLOWPOST
slow_interval=$SLOW_INTERVAL
loris_observe=$LORIS_OBSERVE
slowpost_observe=$SLOWPOST_OBSERVE
sse_hold=$SSE_HOLD
sse_rounds=$SSE_ROUNDS
EOF
python3 "$BENCH/abuse_report.py" "$RES" ${OUT:+"$OUT"}
[[ -z $OUT ]] || log "section written to $OUT"
