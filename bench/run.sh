#!/usr/bin/env bash
# Throughput, latency and memory of mcp-auth-gateway against the upstream direct and nginx
# (proxy_pass and auth_request), plus idle SSE streams; one run measures every row of the
# performance issue and rewrites the results section of BENCHMARKS.md.
#
#   bench/run.sh                                   # full run, ~13 minutes (+ build)
#   BENCH_BIN=/path/to/mcp-auth-gateway bench/run.sh   # use that binary, no cargo at all
#   BENCH_DURATION=1s BENCH_WARMUP=1s BENCH_ROUNDS=1 BENCH_SSE_COUNTS="200 500" \
#       BENCH_OUT=/tmp/bench-test.md bench/run.sh  # a smoke test (~2 minutes)
#
# Time: per round 13 throughput cases and 5 one-connection latency cases, each a warm-up,
# a measured run and a 1 s pause: 18 × (BENCH_WARMUP + BENCH_DURATION + ~1.3 s), i.e.
# ~4 minutes per round with the defaults, ~12 minutes for 3 rounds; then the 1024-connection
# burst (~10 s) and the SSE holds (~1 minute for 1,000 / 5,000 / 9,900 streams on 2 cores).
# About 13 minutes in all; BENCH_DURATION=5s brings it to ~9.
#
# Cases (wrk -t2 -c64 unless said otherwise; every proxied request is a POST of a JSON-RPC
# `tools/call` with Content-Type and Accept as an MCP client sends them, from a wrk Lua script):
#   direct            the upstream nginx (`return 200`, 102-byte JSON body)
#   nginx             nginx proxy_pass to it, keepalive 64 (the reference: 1.00×)
#   gw-open           gateway, no auth ([dangerous] unauthenticated_routes)
#   gw-key            gateway, API key
#   gw-jwt            gateway, ES256 JWT (the same token: token-cache hit), [log] level "warn"
#   gw-jwt-uncached   gateway, ES256 JWT, 100 distinct tokens, 1-entry token cache
#   gw-jwt-rule       gateway, ES256 JWT + [routes.mcp] default "deny" and one rule allowing
#                     the called tool, level "warn" (no audit line)
#   gw-jwt-info-rule  the same route on a gateway without any [log] section: the default
#                     level "info" (one audit line per request, to a file) and format
#                     "pretty" — the headline row
#   verify-key/-jwt   GET /verify as Traefik's forwardAuth sends it (X-Forwarded-Method POST,
#                     -Uri, -Host, the credential, no body)
#   ar-stub           nginx auth_request to a stub nginx (`return 200`), then proxy_pass
#   ar-verify         the same nginx config with the gateway's /verify as the auth target
#   verify-newconn    verify-jwt with `Connection: close`: a new TCP connection per check
#   lat-*             wrk -t1 -c1 at direct, nginx, gw-jwt, gw-jwt-info-rule, verify-jwt
# Then: gateway VmRSS after the runs, after a BENCH_BURST_CONNECTIONS (1024) connection burst,
# and for each of BENCH_SSE_COUNTS idle SSE streams a fresh gateway (API key route) in front
# of bench/abuse_upstream.py sending a `: keep-alive` event every BENCH_SSE_INTERVAL s.
#
# Knobs (environment): BENCH_DURATION (10s), BENCH_WARMUP (2s), BENCH_THREADS (2),
# BENCH_CONNECTIONS (64), BENCH_ROUNDS (3: every case once per round, in the same order;
# the report shows medians and the min–max range), BENCH_LAT_DURATION (BENCH_DURATION: the
# one-connection runs), BENCH_SSE_COUNTS ("1000 5000 9900"), BENCH_SSE_INTERVAL (1 s between
# keep-alives), BENCH_SSE_HOLD (5 s held after the last stream opened), BENCH_SSE_TIMEOUT
# (60 s per connect / head), BENCH_BURST_CONNECTIONS (1024), BENCH_BURST_SETTLE (3 s idle
# after the burst before reading VmRSS), BENCH_BIN (a prebuilt gateway binary; no cargo is
# run), BENCH_BUILD (1; 0 = use target/release/mcp-auth-gateway as it is), BENCH_OUT
# (BENCHMARKS.md at the repo root), BENCH_KEEP=1 keeps the temporary directory (configs,
# logs, raw wrk output).
#
# nginx runs with `worker_processes auto` (2 on a 2-core machine, like the gateway's default
# of one worker per core). The method and the caveats are in BENCHMARKS.md.
#
# Everything listens on 127.0.0.1 on ports that were free a moment ago; every file lives in a
# mktemp directory; every process started here is stopped on exit. Nothing here asserts a
# timing: a target that answers anything but the expected status (or body) stops the run
# instead of being measured, and so does wrk seeing a non-2xx answer or a socket error.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
THREADS=${BENCH_THREADS:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
ROUNDS=${BENCH_ROUNDS:-3}
LAT_DURATION=${BENCH_LAT_DURATION:-$DURATION}
SSE_COUNTS=${BENCH_SSE_COUNTS:-1000 5000 9900}
SSE_INTERVAL=${BENCH_SSE_INTERVAL:-1}
SSE_HOLD=${BENCH_SSE_HOLD:-5}
SSE_TIMEOUT=${BENCH_SSE_TIMEOUT:-60}
BURST_CONNECTIONS=${BENCH_BURST_CONNECTIONS:-1024}
BURST_SETTLE=${BENCH_BURST_SETTLE:-3}
BUILD=${BENCH_BUILD:-1}
OUT=${BENCH_OUT:-$ROOT/BENCHMARKS.md}
if [[ $OUT != /* ]]; then OUT="$PWD/$OUT"; fi
UNCACHED_TOKENS=100
TOOL=get_weather

for tool in wrk nginx openssl python3 curl git; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 1; }
done

WORK=$(mktemp -d -t mcp-gw-bench.XXXXXX)
RESULTS="$WORK/results"
mkdir -p "$RESULTS"
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

log() { echo "bench: $(date +%T) $*" >&2; }
meta() { printf '%s=%s\n' "$1" "$2" >>"$RESULTS/meta.env"; }

# ---------------------------------------------------------------------------------------------
# The binary.

if [[ -n ${BENCH_BIN:-} ]]; then
    GATEWAY_BIN=$BENCH_BIN
    BIN_SOURCE="BENCH_BIN ($BENCH_BIN)"
elif [[ $BUILD == 1 ]]; then
    command -v cargo >/dev/null || die "cargo is required (or BENCH_BIN / BENCH_BUILD=0 with a built binary)"
    log "building the gateway (release)"
    (cd "$ROOT" && cargo build --release --locked)
    GATEWAY_BIN="$ROOT/target/release/mcp-auth-gateway"
    BIN_SOURCE="cargo build --release --locked"
else
    GATEWAY_BIN="$ROOT/target/release/mcp-auth-gateway"
    BIN_SOURCE="target/release as found (BENCH_BUILD=0)"
fi
[[ -x $GATEWAY_BIN ]] || die "no binary at $GATEWAY_BIN"

# Every process started below inherits this limit. The SSE gateway needs two descriptors per
# stream (client side + upstream side), the client and the upstream one each.
hard=$(ulimit -Hn)
[[ $hard == unlimited ]] && hard=65536
ulimit -n "$hard" 2>/dev/null || true
NOFILE=$(ulimit -n)

# ---------------------------------------------------------------------------------------------
# Ports: ask the kernel for free ones, all at once so they differ.

SSE_N_COUNTS=$(wc -w <<<"$SSE_COUNTS")
read -r UP_PORT STUB_PORT NGINX_PORT AR_STUB_PORT AR_GW_PORT GW_PORT GW_INFO_PORT \
    GW_NOCACHE_PORT PY_PORT SSE_PORTS < <(python3 - "$((9 + SSE_N_COUNTS))" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)
read -r -a SSE_PORTS <<<"$SSE_PORTS"

# ---------------------------------------------------------------------------------------------
# nginx: the upstream (`return 200` with a fixed JSON-RPC result), a stub auth server
# (`return 200`, empty), the proxy_pass reference, and the auth_request front (two server
# blocks: auth by the stub, auth by the gateway's /verify). Four separate instances, so the
# CPU time of each is read on its own.

BODY='{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hello from the bench upstream"}]}}'
CALL="{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"$TOOL\",\"arguments\":{\"city\":\"Paris\"}}}"
REFUSED_CALL='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_city","arguments":{"city":"Paris"}}}'

nginx_common() { # $1 = name
    cat <<EOF
worker_processes auto;
daemon off;
pid $WORK/$1/nginx.pid;
error_log $WORK/$1/error.log warn;
events { worker_connections 4096; }
http {
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

upstream_block() { # $1 = name, $2 = port
    cat <<EOF
    upstream $1 {
        server 127.0.0.1:$2;
        keepalive 64;
        keepalive_requests 1000000;
    }
EOF
}

# The auth_request front, the same for both auth targets. $1 = listen port, $2 = upstream
# block of the auth target, $3 = Host sent to it.
auth_request_server() {
    cat <<EOF
    server {
        listen 127.0.0.1:$1;
        location / {
            auth_request /_auth;
            auth_request_set \$auth_user_id \$upstream_http_x_user_id;
            auth_request_set \$auth_scopes \$upstream_http_x_auth_scopes;
            proxy_set_header X-User-Id \$auth_user_id;
            proxy_set_header X-Auth-Scopes \$auth_scopes;
            proxy_set_header Authorization "";
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://bench_upstream;
        }
        location = /_auth {
            internal;
            proxy_pass http://$2/verify;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Host $3;
            proxy_set_header X-Original-URI \$request_uri;
            proxy_set_header X-Original-Method \$request_method;
            proxy_set_header X-Forwarded-Host \$http_host;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
EOF
}

mkdir -p "$WORK/upstream" "$WORK/stub" "$WORK/nginx" "$WORK/authreq"
{
    nginx_common upstream
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
    nginx_common stub
    cat <<EOF
    server {
        listen 127.0.0.1:$STUB_PORT;
        location / {
            return 200;
        }
    }
}
EOF
} >"$WORK/stub/nginx.conf"
{
    nginx_common nginx
    upstream_block bench_upstream "$UP_PORT"
    cat <<EOF
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
{
    nginx_common authreq
    upstream_block bench_upstream "$UP_PORT"
    upstream_block auth_stub "$STUB_PORT"
    upstream_block auth_gateway "$GW_PORT"
    auth_request_server "$AR_STUB_PORT" auth_stub "127.0.0.1:$STUB_PORT"
    auth_request_server "$AR_GW_PORT" auth_gateway "127.0.0.1:$GW_PORT"
    echo "}"
} >"$WORK/authreq/nginx.conf"

start_nginx() { # $1 = name; sets LAST_PID
    nginx -t -q -p "$WORK/$1" -e "$WORK/$1/error.log" -c "$WORK/$1/nginx.conf" \
        || die "nginx config $1 is invalid"
    nginx -p "$WORK/$1" -e "$WORK/$1/error.log" -c "$WORK/$1/nginx.conf" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

start_nginx upstream
UP_PID=$LAST_PID
start_nginx stub
STUB_PID=$LAST_PID
start_nginx nginx
NGINX_PID=$LAST_PID
start_nginx authreq
AR_PID=$LAST_PID

# The SSE upstream: Python asyncio, `: keep-alive` every SSE_INTERVAL s on each stream.
python3 "$BENCH/abuse_upstream.py" --port "$PY_PORT" --keepalive "$SSE_INTERVAL" >"$WORK/py-upstream.log" 2>&1 &
PY_PID=$!
PIDS+=("$PY_PID")

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

mint() { # $1 = gateway port, $2 = route path, $3 = count; prints tokens for that route
    local now
    now=$(date +%s)
    cat >"$WORK/claims.json" <<EOF
{"iss":"$ISSUER","sub":"bench-user","aud":"http://127.0.0.1:$1$2",
 "iat":$now,"nbf":$now,"exp":$((now + 7200)),"scope":"mcp:tools","client_id":"bench-client",
 "email":"bench@example.com","jti":"bench"}
EOF
    python3 "$BENCH/es256.py" token "$WORK/es256.pem" "$KID" "$WORK/claims.json" "$3"
}

JWT=$(mint "$GW_PORT" /jwt 1)
JWT_RULE=$(mint "$GW_PORT" /jwt-rule 1)
JWT_INFO_RULE=$(mint "$GW_INFO_PORT" /jwt-rule 1)
mint "$GW_NOCACHE_PORT" /jwt "$UNCACHED_TOKENS" >"$WORK/tokens-uncached.txt"
BAD_JWT="${JWT%.*}.$(printf 'A%.0s' {1..86})"

# ---------------------------------------------------------------------------------------------
# Gateways: the same routes three times.
#   gw          [log] level "warn" (no audit line per request)        — most gateway rows
#   gw-info     no [log] section: level "info", format "pretty", the shipped default
#   gw-nocache  "warn", token_cache_entries = 1, for the uncached-JWT row
# gw also serves /verify for the auth_request front; its max_connections_per_ip is 0 (every
# client is 127.0.0.1, and the default of 512 would refuse most of the 1024-connection burst).

gateway_config() { # $1 = port, $2 = [log] and [server.limits] lines
    cat <<EOF
[server]
listen = ["127.0.0.1:$1"]
public_url = "http://127.0.0.1:$1"
allowed_hosts = ["127.0.0.1"]

$2

[forward_auth]
enabled = true
path = "/verify"

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

[[routes]]
id = "jwt-rule"
path = "/jwt-rule"
upstream = "http://127.0.0.1:$UP_PORT/mcp"
verifiers = ["bench"]
scopes = ["mcp:tools"]

[routes.mcp]
default = "deny"

[[routes.mcp.rules]]
name = "weather"
tools = ["$TOOL"]
allow = true

[dangerous]
unauthenticated_routes = ["open"]
EOF
}

start_gateway() { # $1 = name, $2 = port, $3 = config lines; sets LAST_PID
    gateway_config "$2" "$3" >"$WORK/$1.toml"
    "$GATEWAY_BIN" check --config "$WORK/$1.toml" >"$WORK/$1.check" 2>&1 \
        || { cat "$WORK/$1.check" >&2; die "gateway config $1 does not compile"; }
    env -u RUST_LOG "$GATEWAY_BIN" serve --config "$WORK/$1.toml" >"$WORK/$1.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

start_gateway gw "$GW_PORT" '[log]
level = "warn"

[server.limits]
max_connections_per_ip = 0'
GW_PID=$LAST_PID
start_gateway gw-info "$GW_INFO_PORT" ''
GW_INFO_PID=$LAST_PID
start_gateway gw-nocache "$GW_NOCACHE_PORT" '[log]
level = "warn"

[server.limits]
token_cache_entries = 1'
GW_NOCACHE_PID=$LAST_PID

wait_ready() { # $1 = url, $2 = pid
    for _ in $(seq 100); do
        kill -0 "$2" 2>/dev/null || die "process $2 for $1 exited (logs in $WORK; BENCH_KEEP=1 keeps them)"
        if curl -sS -o /dev/null "$1" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "$1 did not come up"
}

wait_ready "http://127.0.0.1:$UP_PORT/" "$UP_PID"
wait_ready "http://127.0.0.1:$STUB_PORT/" "$STUB_PID"
wait_ready "http://127.0.0.1:$NGINX_PORT/" "$NGINX_PID"
wait_ready "http://127.0.0.1:$AR_STUB_PORT/" "$AR_PID"
wait_ready "http://127.0.0.1:$PY_PORT/stats" "$PY_PID"
wait_ready "http://127.0.0.1:$GW_PORT/healthz" "$GW_PID"
wait_ready "http://127.0.0.1:$GW_INFO_PORT/healthz" "$GW_INFO_PID"
wait_ready "http://127.0.0.1:$GW_NOCACHE_PORT/healthz" "$GW_NOCACHE_PID"

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# Idle memory right after start: /healthz was the only request so far.
sleep 1
meta rss_start_kb "$(rss_kb "$GW_PID")"

# ---------------------------------------------------------------------------------------------
# Correctness first: every target must answer what we expect, or nothing is measured.

MCP_HEADERS=(-H "Content-Type: application/json" -H "Accept: application/json, text/event-stream")

expect() { # $1 = expected status, $2 = expected body ("-" = any), $3 = url, then curl args
    local want=$1 body=$2 url=$3 got
    shift 3
    got=$(curl -sS -o "$WORK/expect.body" -w '%{http_code}' --max-time 10 "$@" "$url") \
        || die "curl $url failed"
    [[ $got == "$want" ]] || {
        head -c 600 "$WORK/expect.body" >&2
        die "$url answered $got, expected $want"
    }
    if [[ $body != - && $(cat "$WORK/expect.body") != "$body" ]]; then
        head -c 600 "$WORK/expect.body" >&2
        die "$url answered an unexpected body"
    fi
}

post() { # like expect, POSTing the tools/call ($CALL) the wrk runs send
    local want=$1 body=$2 url=$3
    shift 3
    expect "$want" "$body" "$url" -X POST "${MCP_HEADERS[@]}" --data-binary "$CALL" "$@"
}

GW="http://127.0.0.1:$GW_PORT"
GW_INFO="http://127.0.0.1:$GW_INFO_PORT"
GW_NOCACHE="http://127.0.0.1:$GW_NOCACHE_PORT"
GW_HOST="127.0.0.1:$GW_PORT"
AUTH_KEY="Authorization: Bearer $API_KEY"
AUTH_JWT="Authorization: Bearer $JWT"

log "checking every target answers as expected"
post 200 "$BODY" "http://127.0.0.1:$UP_PORT/mcp"
post 200 "$BODY" "http://127.0.0.1:$NGINX_PORT/mcp"
post 200 "" "http://127.0.0.1:$STUB_PORT/verify"
for gw in "$GW" "$GW_INFO" "$GW_NOCACHE"; do
    post 200 "$BODY" "$gw/open"
    post 200 "$BODY" "$gw/key" -H "$AUTH_KEY"
    post 401 - "$gw/key"
    post 401 - "$gw/key" -H "Authorization: Bearer wrong-$API_KEY"
    post 401 - "$gw/jwt" -H "Authorization: Bearer $BAD_JWT"
    post 401 - "$gw/jwt" -H "$AUTH_KEY"
    post 401 - "$gw/jwt-rule"
done
post 200 "$BODY" "$GW/jwt" -H "$AUTH_JWT"
while read -r token; do
    post 200 "$BODY" "$GW_NOCACHE/jwt" -H "Authorization: Bearer $token"
done <"$WORK/tokens-uncached.txt"
# A token minted for another route or gateway must not pass (the audience is checked).
post 401 - "$GW/jwt" -H "Authorization: Bearer $JWT_RULE"
post 401 - "$GW/jwt-rule" -H "Authorization: Bearer $JWT_INFO_RULE"
# The tool rule: the called tool passes with the upstream's exact answer, another is refused
# by the default (a JSON-RPC error -32001, never forwarded).
for pair in "$GW $JWT_RULE" "$GW_INFO $JWT_INFO_RULE"; do
    read -r gw token <<<"$pair"
    post 200 "$BODY" "$gw/jwt-rule" -H "Authorization: Bearer $token"
    got=$(curl -sS --max-time 10 -X POST "${MCP_HEADERS[@]}" --data-binary "$REFUSED_CALL" \
        -H "Authorization: Bearer $token" "$gw/jwt-rule") || die "curl $gw/jwt-rule failed"
    [[ $got == *-32001* ]] || die "$gw/jwt-rule did not refuse delete_city: $got"
done
VERIFY_HEADERS=(-H "X-Forwarded-Method: POST" -H "X-Forwarded-Host: $GW_HOST" "${MCP_HEADERS[@]}")
VERIFY_KEY=("${VERIFY_HEADERS[@]}" -H "X-Forwarded-Uri: /key" -H "$AUTH_KEY")
VERIFY_JWT=("${VERIFY_HEADERS[@]}" -H "X-Forwarded-Uri: /jwt" -H "$AUTH_JWT")
expect 200 "" "$GW/verify" "${VERIFY_KEY[@]}"
expect 200 "" "$GW/verify" "${VERIFY_JWT[@]}"
expect 200 "" "$GW/verify" "${VERIFY_JWT[@]}" -H "Connection: close"
expect 401 - "$GW/verify" "${VERIFY_HEADERS[@]}" -H "X-Forwarded-Uri: /jwt"
# auth_request: through the stub anything passes; through /verify only the JWT.
post 200 "$BODY" "http://127.0.0.1:$AR_STUB_PORT/jwt" -H "$AUTH_JWT"
post 200 "$BODY" "http://127.0.0.1:$AR_GW_PORT/jwt" -H "$AUTH_JWT"
post 401 - "http://127.0.0.1:$AR_GW_PORT/jwt"
post 401 - "http://127.0.0.1:$AR_GW_PORT/jwt" -H "Authorization: Bearer $BAD_JWT"

# ---------------------------------------------------------------------------------------------
# Measurements.

: >"$RESULTS/cases.tsv"

cat >"$WORK/post.lua" <<EOF
-- POST a JSON-RPC tools/call, as an MCP client does (the credential comes from -H).
wrk.method = "POST"
wrk.body = [[$CALL]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
EOF
cat >"$WORK/rotate.lua" <<EOF
-- The same POST; each request carries the next of $UNCACHED_TOKENS distinct tokens (one Lua
-- state per thread).
local tokens = {}
for line in io.lines("$WORK/tokens-uncached.txt") do tokens[#tokens + 1] = line end
local body = [[$CALL]]
local i = 0
request = function()
    i = i % #tokens + 1
    return wrk.format("POST", nil, {
        ["Content-Type"] = "application/json",
        ["Accept"] = "application/json, text/event-stream",
        ["Authorization"] = "Bearer " .. tokens[i],
    }, body)
end
EOF

cpu_ticks() { # utime + stime (clock ticks) of $1 and its direct children (nginx workers)
    local total=0 pid f
    [[ $1 == - ]] && { echo 0; return; }
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

wrk_errors() { # $1 = wrk output: prints what would make its numbers the speed of errors
    grep -E 'Non-2xx or 3xx responses|Socket errors' "$1" || true
}

# bench <id> <threads> <connections> <duration> <pid under test> <auth pid or -> <url> [wrk args]
# One warm-up and one measured wrk run; CPU ticks of the process under test, of the auth
# target (auth_request rows), of the upstream, of wrk and of the whole machine around it.
bench() {
    local id=$1 threads=$2 conns=$3 duration=$4 pid=$5 aux=$6 url=$7 file
    shift 7
    file="$RESULTS/$id.r$ROUND"
    log "round $ROUND/$ROUNDS: $id (wrk -t$threads -c$conns $url)"
    wrk -t"$threads" -c"$conns" -d"$WARMUP" "$@" "$url" >"$file.warmup" 2>&1 \
        || die "wrk warm-up for $id failed: $(cat "$file.warmup")"
    if [[ -n $(wrk_errors "$file.warmup") ]]; then
        cat "$file.warmup" >&2
        die "$id: errors during the warm-up"
    fi
    local cpu0 aux0 up0 m0 cpu1 aux1 up1 m1 wrk_cpu
    cpu0=$(cpu_ticks "$pid")
    aux0=$(cpu_ticks "$aux")
    up0=$(cpu_ticks "$UP_PID")
    m0=$(machine_ticks)
    wrk_cpu=$( { TIMEFORMAT='%U %S'; time wrk -t"$threads" -c"$conns" -d"$duration" --latency "$@" "$url" \
        >"$file.wrk" 2>&1; } 2>&1) || die "wrk $id failed: $(cat "$file.wrk")"
    m1=$(machine_ticks)
    cpu1=$(cpu_ticks "$pid")
    aux1=$(cpu_ticks "$aux")
    up1=$(cpu_ticks "$UP_PID")
    if [[ -n $(wrk_errors "$file.wrk") ]]; then
        cat "$file.wrk" >&2
        die "$id: wrk saw error responses or socket errors; its numbers would be the speed of errors"
    fi
    grep -q '^Requests/sec:' "$file.wrk" || die "$id: no Requests/sec in wrk output"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$ROUND" "$((cpu1 - cpu0))" "$((aux1 - aux0))" \
        "$((up1 - up0))" "$wrk_cpu" "$(( ${m1% *} - ${m0% *} ))" "$(( ${m1#* } - ${m0#* } ))" \
        >>"$RESULTS/cases.tsv"
    sleep 1
}

tput() { # <id> <pid> <auth pid or -> <url> [wrk args]: the 64-connection runs
    local id=$1 pid=$2 aux=$3 url=$4
    shift 4
    bench "$id" "$THREADS" "$CONNECTIONS" "$DURATION" "$pid" "$aux" "$url" "$@"
}

lat() { # <id> <pid> <url> [wrk args]: one connection, one request at a time
    local id=$1 pid=$2 url=$3
    shift 3
    bench "$id" 1 1 "$LAT_DURATION" "$pid" - "$url" "$@"
}

# What else is using the machine: busy CPU over 2 quiet seconds before the first run.
q0=$(machine_ticks)
sleep 2
q1=$(machine_ticks)
QUIET_BUSY_PCT=$(( (${q1% *} - ${q0% *}) * 100 / (2 * $(getconf CLK_TCK) * $(nproc)) ))
if (( QUIET_BUSY_PCT > 10 )); then
    log "WARNING: ${QUIET_BUSY_PCT}% of the CPU was busy before the benchmark started; results will be low"
fi

POST=(-s "$WORK/post.lua")
VERIFY_JWT_WRK=(-H "X-Forwarded-Method: POST" -H "X-Forwarded-Host: $GW_HOST" -H "X-Forwarded-Uri: /jwt"
    -H "Content-Type: application/json" -H "Accept: application/json, text/event-stream" -H "$AUTH_JWT")
VERIFY_KEY_WRK=(-H "X-Forwarded-Method: POST" -H "X-Forwarded-Host: $GW_HOST" -H "X-Forwarded-Uri: /key"
    -H "Content-Type: application/json" -H "Accept: application/json, text/event-stream" -H "$AUTH_KEY")
START_S=$SECONDS
for ROUND in $(seq "$ROUNDS"); do
    tput direct "$UP_PID" - "http://127.0.0.1:$UP_PORT/mcp" "${POST[@]}"
    tput nginx "$NGINX_PID" - "http://127.0.0.1:$NGINX_PORT/mcp" "${POST[@]}"
    tput gw-open "$GW_PID" - "$GW/open" "${POST[@]}"
    tput gw-key "$GW_PID" - "$GW/key" "${POST[@]}" -H "$AUTH_KEY"
    tput gw-jwt "$GW_PID" - "$GW/jwt" "${POST[@]}" -H "$AUTH_JWT"
    tput gw-jwt-uncached "$GW_NOCACHE_PID" - "$GW_NOCACHE/jwt" -s "$WORK/rotate.lua"
    tput gw-jwt-rule "$GW_PID" - "$GW/jwt-rule" "${POST[@]}" -H "Authorization: Bearer $JWT_RULE"
    tput gw-jwt-info-rule "$GW_INFO_PID" - "$GW_INFO/jwt-rule" "${POST[@]}" -H "Authorization: Bearer $JWT_INFO_RULE"
    tput verify-key "$GW_PID" - "$GW/verify" "${VERIFY_KEY_WRK[@]}"
    tput verify-jwt "$GW_PID" - "$GW/verify" "${VERIFY_JWT_WRK[@]}"
    tput ar-stub "$AR_PID" "$STUB_PID" "http://127.0.0.1:$AR_STUB_PORT/jwt" "${POST[@]}" -H "$AUTH_JWT"
    tput ar-verify "$AR_PID" "$GW_PID" "http://127.0.0.1:$AR_GW_PORT/jwt" "${POST[@]}" -H "$AUTH_JWT"
    tput verify-newconn "$GW_PID" - "$GW/verify" "${VERIFY_JWT_WRK[@]}" -H "Connection: close"
    lat lat-direct "$UP_PID" "http://127.0.0.1:$UP_PORT/mcp" "${POST[@]}"
    lat lat-nginx "$NGINX_PID" "http://127.0.0.1:$NGINX_PORT/mcp" "${POST[@]}"
    lat lat-gw-jwt "$GW_PID" "$GW/jwt" "${POST[@]}" -H "$AUTH_JWT"
    lat lat-gw-jwt-info-rule "$GW_INFO_PID" "$GW_INFO/jwt-rule" "${POST[@]}" -H "Authorization: Bearer $JWT_INFO_RULE"
    lat lat-verify-jwt "$GW_PID" "$GW/verify" "${VERIFY_JWT_WRK[@]}"
    if (( ROUND == 1 && ROUNDS > 1 )); then
        log "one round took $((SECONDS - START_S)) s; about $(( (SECONDS - START_S) * (ROUNDS - 1) / 60 + 2 )) more minutes to go"
    fi
done
meta runs_seconds "$((SECONDS - START_S))"
# The tool rule still refuses what it refused before the runs (the rows measured it, not a
# route that lets everything through).
got=$(curl -sS --max-time 10 -X POST "${MCP_HEADERS[@]}" --data-binary "$REFUSED_CALL" \
    -H "Authorization: Bearer $JWT_INFO_RULE" "$GW_INFO/jwt-rule") || die "curl $GW_INFO/jwt-rule failed"
[[ $got == *-32001* ]] || die "$GW_INFO/jwt-rule no longer refuses delete_city: $got"

# Idle memory after the load: connections closed, give it a moment.
sleep 2
meta rss_after_kb "$(rss_kb "$GW_PID")"
meta hwm_kb "$(hwm_kb "$GW_PID")"

# Memory after many connections: a short burst of BURST_CONNECTIONS connections at /open (its
# speed is not reported), then idle again. The gateway keeps up to 256 idle upstream
# connections for 90 s, so some of this is live; the rest is what the allocator keeps.
log "memory: ${BURST_CONNECTIONS}-connection burst at $GW/open"
wrk -t"$THREADS" -c"$BURST_CONNECTIONS" -d5s "$GW/open" "${POST[@]}" >"$RESULTS/burst.wrk" 2>&1 \
    || die "wrk burst failed: $(cat "$RESULTS/burst.wrk")"
grep -q -E 'Non-2xx or 3xx responses' "$RESULTS/burst.wrk" \
    && { cat "$RESULTS/burst.wrk" >&2; die "the burst got non-2xx answers"; }
meta burst_errors "$(grep -E 'Socket errors' "$RESULTS/burst.wrk" | tr -s ' ' | sed 's/^ //' || true)"
meta burst_requests "$(awk '/requests in/ {print $1}' "$RESULTS/burst.wrk")"
sleep "$BURST_SETTLE"
meta rss_burst_kb "$(rss_kb "$GW_PID")"
meta hwm_burst_kb "$(hwm_kb "$GW_PID")"

# ---------------------------------------------------------------------------------------------
# Idle SSE streams: for each count a fresh gateway (so "before" is a gateway that has served
# nothing else), one API-key route to the Python upstream.

wait_file() { # $1 = file, $2 = seconds, $3 = pid that writes it
    local deadline=$((SECONDS + $2))
    while [[ ! -s $1 ]]; do
        kill -0 "$3" 2>/dev/null || die "process $3 exited before writing $1 (see $WORK; BENCH_KEEP=1 keeps it)"
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

sse_config() { # $1 = port
    cat <<EOF
[server]
listen = ["127.0.0.1:$1"]
public_url = "http://127.0.0.1:$1"
allowed_hosts = ["127.0.0.1"]

[server.limits]
max_connections = 20000
max_connections_per_ip = 0

[log]
level = "warn"
format = "json"

[[api_keys]]
id = "bench"
hash = "$API_KEY_HASH"
subject = "bench-user"
scopes = ["mcp:tools"]

[[routes]]
id = "sse"
path = "/mcp"
upstream = "http://127.0.0.1:$PY_PORT/mcp"
verifiers = ["api_keys"]
scopes = ["mcp:tools"]
EOF
}

SSE_FIT=$(( (NOFILE - 128) / 2 ))
meta nofile "$NOFILE"
meta sse_fit "$SSE_FIT"
meta sse_interval "$SSE_INTERVAL"
meta sse_hold "$SSE_HOLD"
SSE_DONE=()
i=0
for want in $SSE_COUNTS; do
    port=${SSE_PORTS[$i]}
    i=$((i + 1))
    n=$want
    if (( n > SSE_FIT )); then
        log "SSE: ulimit -n is $NOFILE: $want streams scaled down to $SSE_FIT"
        n=$SSE_FIT
    fi
    name="sse-$want"
    log "SSE: $n idle streams through a fresh gateway"
    sse_config "$port" >"$WORK/$name.toml"
    "$GATEWAY_BIN" check --config "$WORK/$name.toml" >"$WORK/$name.check" 2>&1 \
        || { cat "$WORK/$name.check" >&2; die "gateway config $name does not compile"; }
    env -u RUST_LOG "$GATEWAY_BIN" serve --config "$WORK/$name.toml" >"$WORK/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_ready "http://127.0.0.1:$port/healthz" "$pid"
    # One stream first: the head must arrive with the right type (curl stops after 2 s).
    head=$(curl -sS -o /dev/null -w '%{http_code} %{content_type}' --max-time 2 -H "$AUTH_KEY" \
        -H 'Accept: text/event-stream' "http://127.0.0.1:$port/mcp" 2>/dev/null || true)
    [[ $head == "200 text/event-stream"* ]] || die "SSE through the gateway answered '$head'"
    sleep 1
    p="sse_${want}"
    meta "${p}_n" "$n"
    meta "${p}_rss_before_kb" "$(rss_kb "$pid")"
    meta "${p}_fds_before" "$(fds "$pid")"
    meta "${p}_log_offset" "$(stat -c %s "$WORK/$name.log")"
    python3 "$BENCH/abuse_client.py" sse --port "$port" --n "$n" --key "$API_KEY" \
        --timeout "$SSE_TIMEOUT" --ready "$RESULTS/$name-ready.json" --release "$WORK/$name-release" \
        --out "$RESULTS/$name.json" --hold-max $((SSE_HOLD + 2 * SSE_TIMEOUT + 60)) \
        >"$WORK/$name-client.log" 2>&1 &
    client=$!
    PIDS+=("$client")
    wait_file "$RESULTS/$name-ready.json" $((2 * SSE_TIMEOUT + 60)) "$client"
    log "SSE: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["ok"], "of", d["requested"], "open, errors", d["errors"], "in", d["open_seconds"], "s")' "$RESULTS/$name-ready.json")"
    sleep 2
    meta "${p}_rss_held_kb" "$(rss_kb "$pid")"
    meta "${p}_hwm_held_kb" "$(hwm_kb "$pid")"
    meta "${p}_fds_held" "$(fds "$pid")"
    curl -sS --max-time 5 "http://127.0.0.1:$PY_PORT/stats" >"$RESULTS/$name-upstream.json"
    sleep "$(( SSE_HOLD > 2 ? SSE_HOLD - 2 : 0 ))"
    meta "${p}_rss_held_late_kb" "$(rss_kb "$pid")"
    touch "$WORK/$name-release"
    wait_exit "$client" 60
    sleep 2
    meta "${p}_rss_closed_kb" "$(rss_kb "$pid")"
    meta "${p}_fds_closed" "$(fds "$pid")"
    stop_pid "$pid"
    cp "$WORK/$name.log" "$RESULTS/$name.log"
    SSE_DONE+=("$want")
done
meta sse_counts "${SSE_DONE[*]}"

# ---------------------------------------------------------------------------------------------
# The info instance must really have logged one audit line per request, or its rows would be
# mislabelled (an empty RUST_LOG once silenced it). Its writer drops lines it cannot write in
# time and says so on stderr (same file here), at most every 10 s: those count as written.

INFO_REQUESTS=$(cat "$RESULTS"/gw-jwt-info-rule.r*.wrk "$RESULTS"/gw-jwt-info-rule.r*.warmup \
    "$RESULTS"/lat-gw-jwt-info-rule.r*.wrk "$RESULTS"/lat-gw-jwt-info-rule.r*.warmup \
    | awk '/requests in/ {n += $1} END {print n + 0}')
# Audit lines of the judged call (only /jwt-rule has [routes.mcp], so only it names the tool).
INFO_AUDIT_LINES=$(grep -c "mcp_target=\"$TOOL\"" "$WORK/gw-info.log" || true)
INFO_DROPPED=$(grep -o '([0-9]* in total)' "$WORK/gw-info.log" | tr -dc '0-9\n' | tail -n1 || true)
INFO_DROPPED=${INFO_DROPPED:-0}
(( INFO_AUDIT_LINES + INFO_DROPPED >= INFO_REQUESTS )) \
    || die "the info-level gateway logged $INFO_AUDIT_LINES lines (+ $INFO_DROPPED dropped) for $INFO_REQUESTS requests"
grep -m1 "mcp_target=\"$TOOL\"" "$WORK/gw-info.log" >"$RESULTS/info-sample.log" || true

# ---------------------------------------------------------------------------------------------
# Report.

rustc_of_binary() { # the compiler named in the binary's .comment section, if any
    readelf -p .comment "$GATEWAY_BIN" 2>/dev/null | grep -o 'rustc version [^)]*)' | head -n1 \
        | sed 's/^rustc version /rustc /' || true
}
RUSTC=$(rustc_of_binary)
[[ -n $RUSTC ]] || RUSTC="$(rustc --version 2>/dev/null || echo 'rustc unknown') (on PATH; not read from the binary)"

meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta commit "$(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ' (with uncommitted changes in src/)')"
meta binary "$BIN_SOURCE"
meta rustc "$RUSTC"
meta nproc "$(nproc)"
meta cpu "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
meta kernel "$(uname -sr)"
meta mem "$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
meta wrk "$(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}')"
meta nginx "$(nginx -v 2>&1 | sed 's/^nginx version: nginx\///')"
meta python "$(python3 --version 2>&1)"
meta clk_tck "$(getconf CLK_TCK)"
meta threads "$THREADS"
meta connections "$CONNECTIONS"
meta duration "$DURATION"
meta lat_duration "$LAT_DURATION"
meta warmup "$WARMUP"
meta uncached_tokens "$UNCACHED_TOKENS"
meta rounds "$ROUNDS"
meta quiet_busy_pct "$QUIET_BUSY_PCT"
meta body_bytes "${#BODY}"
meta call_bytes "${#CALL}"
meta tool "$TOOL"
meta burst_connections "$BURST_CONNECTIONS"
meta burst_settle "$BURST_SETTLE"
meta info_log_bytes "$(stat -c %s "$WORK/gw-info.log")"
meta info_log_lines "$INFO_AUDIT_LINES"
meta info_log_dropped "$INFO_DROPPED"
meta info_log_requests "$INFO_REQUESTS"
meta total_seconds "$SECONDS"

python3 "$BENCH/report.py" "$RESULTS" "$OUT"
log "results written to $OUT"
