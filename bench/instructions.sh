#!/usr/bin/env bash
# Instructions per request, counted by callgrind: the deterministic measure used to judge a
# code change on this noisy host (wall-clock runs of the same binary vary by ±30%; see
# BENCHMARKS.md, "Method").
#
#   bench/instructions.sh                    # builds the release binary first
#   BENCH_BIN=target/release/mcp-auth-gateway bench/instructions.sh
#   INSTR_CASES="jwt-rule-info verify" bench/instructions.sh
#   INSTR_KEEP=/tmp/profiles bench/instructions.sh   # keep the callgrind files, for
#                                                    # callgrind_annotate
#
# Each case runs the gateway under `valgrind --tool=callgrind` twice, once for WARMUP
# requests and once for WARMUP + COUNT, all on one kept-alive connection from a Python
# client; instructions per request = (second total − first total) / COUNT, so start-up,
# configuration and the first requests' allocations cancel out. Upstream: nginx
# `return 200` with a JSON-RPC result (as in bench/run.sh).
#
# Cases:
#   jwt-rule-info   POST tools/call, ES256 JWT, tool rule, `info` (audit line), pretty log
#   jwt-rule-json   the same with `[log] format = "json"`
#   jwt-warn        POST tools/call, ES256 JWT, no rule, `warn` (no audit line)
#   open-warn       POST, no authentication, `warn`
#   verify          GET /verify with the JWT, `warn` (the ForwardAuth check alone)
#   verify-new      the same on a new connection per check (Traefik's way)
#   nginx-proxy     the reference: nginx `proxy_pass` (kept alive) to the same upstream, sent
#                   the headline request (nginx passes the token on unread); not the gateway
#
# Needs valgrind, nginx, openssl, python3. Prints one TSV line per case and writes
# $INSTR_OUT (default bench/results/instructions.tsv).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH="$ROOT/bench"
WARMUP=${INSTR_WARMUP:-200}
COUNT=${INSTR_COUNT:-2000}
CASES=${INSTR_CASES:-"jwt-rule-info jwt-rule-json jwt-warn open-warn verify verify-new nginx-proxy"}
OUT=${INSTR_OUT:-$BENCH/results/instructions.tsv}
UP_PORT=${INSTR_UPSTREAM_PORT:-18391}
GW_PORT=${INSTR_GATEWAY_PORT:-18392}

die() { echo "instructions.sh: $*" >&2; exit 1; }
for tool in valgrind nginx openssl python3 callgrind_annotate; do
    command -v "$tool" >/dev/null || die "needs $tool"
done

if [[ -z ${BENCH_BIN:-} ]]; then
    (cd "$ROOT" && cargo build --release --locked --quiet)
    BENCH_BIN="$ROOT/target/release/mcp-auth-gateway"
fi
[[ -x $BENCH_BIN ]] || die "no gateway binary at $BENCH_BIN"

WORK=$(mktemp -d /tmp/mcp-gw-instructions.XXXXXX)
NGINX_PID=""
cleanup() {
    [[ -n $NGINX_PID ]] && kill "$NGINX_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# What every nginx here shares in its `http` block: no access log, files under $WORK.
nginx_http_common() {
    echo "    access_log off;"
    for kind in client_body proxy fastcgi uwsgi scgi; do
        echo "    ${kind}_temp_path $WORK/nginx;"
    done
}

# The upstream.
BODY='{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hello from the bench upstream"}]}}'
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
$(nginx_http_common)
    server {
        listen 127.0.0.1:$UP_PORT;
        location / {
            default_type application/json;
            return 200 '$BODY';
        }
    }
}
EOF
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
NGINX_PID=$!

# Credentials.
ISSUER="https://issuer.bench.invalid"
KID="bench-es256"
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/es256.pem" 2>/dev/null
python3 "$BENCH/es256.py" jwks "$WORK/es256.pem" "$KID" >"$WORK/jwks.json"
now=$(date +%s)
token_for() { # $1 = route path
    cat >"$WORK/claims.json" <<EOF
{"iss":"$ISSUER","sub":"bench-user","aud":"http://127.0.0.1:$GW_PORT$1",
 "iat":$now,"nbf":$now,"exp":$((now + 7200)),"scope":"mcp:tools","client_id":"bench-client",
 "email":"bench@example.com","jti":"bench"}
EOF
    python3 "$BENCH/es256.py" token "$WORK/es256.pem" "$KID" "$WORK/claims.json" 1
}

config() { # $1 = [log] lines
    cat <<EOF
[server]
listen = ["127.0.0.1:$GW_PORT"]
public_url = "http://127.0.0.1:$GW_PORT"
allowed_hosts = ["127.0.0.1"]

$1

[forward_auth]
enabled = true
path = "/verify"

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
tools = ["get_weather"]
allow = true

[dangerous]
unauthenticated_routes = ["open"]
EOF
}

# The reference: nginx `proxy_pass` to the same upstream, kept alive (bench/run.sh's
# `nginx` row), one process (no master) so that callgrind sees the worker.
nginx_proxy_config() {
    cat <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $WORK/nginx/proxy.pid;
error_log $WORK/nginx/proxy-error.log warn;
events { worker_connections 1024; }
http {
$(nginx_http_common)
    upstream bench_upstream {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$GW_PORT;
        location = /jwt-rule {
            proxy_pass http://bench_upstream/mcp;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}

# One case: $1 = name, $2 = [log] lines, $3 = method, $4 = path, $5 = token or "",
# $6 = "new" for a new connection per request. Prints the instructions per request.
measure() {
    local name=$1 log=$2 method=$3 path=$4 token=$5 fresh=${6:-} totals=() server
    if [[ $name == nginx-proxy ]]; then
        nginx_proxy_config >"$WORK/nginx-proxy.conf"
        server=(nginx -c "$WORK/nginx-proxy.conf" -p "$WORK/nginx")
    else
        config "$log" >"$WORK/$name.toml"
        "$BENCH_BIN" check --config "$WORK/$name.toml" >/dev/null 2>&1 || die "config $name"
        server=("$BENCH_BIN" serve --config "$WORK/$name.toml")
    fi
    for requests in "$WARMUP" "$((WARMUP + COUNT))"; do
        local profile="$WORK/$name-$requests.callgrind"
        env -u RUST_LOG valgrind --tool=callgrind --callgrind-out-file="$profile" \
            "${server[@]}" >"$WORK/$name-$requests.log" 2>&1 &
        local pid=$!
        # measure runs in $(...), outside the EXIT trap: a failing client stops the server.
        python3 - "$GW_PORT" "$method" "$path" "$token" "$requests" "$fresh" <<'PY' || { kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; die "client for $name"; }
import http.client, sys, time
port, method, path, token, requests = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
fresh = sys.argv[6] == "new"
body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_weather","arguments":{"city":"Paris"}}}'
deadline = time.time() + 120
while True:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("the gateway did not start")
        time.sleep(0.5)
headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
if token:
    headers["Authorization"] = "Bearer " + token
for _ in range(requests):
    if fresh:
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
    if method == "POST":
        conn.request("POST", path, body=body, headers=headers)
    else:
        conn.request("GET", path, headers={**headers, "X-Forwarded-Method": "POST",
                                           "X-Forwarded-Uri": "/jwt", "X-Forwarded-Host": "127.0.0.1:" + port,
                                           "X-Forwarded-Proto": "http"})
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        sys.exit(f"{method} {path}: status {response.status}")
PY
        kill -TERM "$pid"
        wait "$pid" 2>/dev/null || true
        [[ -n ${INSTR_KEEP:-} ]] && mkdir -p "$INSTR_KEEP" && cp "$profile" "$INSTR_KEEP/"
        totals+=("$(callgrind_annotate "$profile" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')")
    done
    [[ -n ${totals[0]} && -n ${totals[1]} ]] || die "no totals for $name"
    echo $(((totals[1] - totals[0]) / COUNT))
}

mkdir -p "$(dirname "$OUT")"
printf 'case\tinstructions_per_request\tcommit\n' >"$OUT"
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
for case in $CASES; do
    case $case in
        jwt-rule-info) result=$(measure "$case" "" POST /jwt-rule "$(token_for /jwt-rule)") ;;
        jwt-rule-json) result=$(measure "$case" $'[log]\nformat = "json"' POST /jwt-rule "$(token_for /jwt-rule)") ;;
        jwt-warn) result=$(measure "$case" $'[log]\nlevel = "warn"' POST /jwt "$(token_for /jwt)") ;;
        open-warn) result=$(measure "$case" $'[log]\nlevel = "warn"' POST /open "") ;;
        verify) result=$(measure "$case" $'[log]\nlevel = "warn"' GET /verify "$(token_for /jwt)") ;;
        verify-new) result=$(measure "$case" $'[log]\nlevel = "warn"' GET /verify "$(token_for /jwt)" new) ;;
        nginx-proxy) result=$(measure "$case" "" POST /jwt-rule "$(token_for /jwt-rule)") ;;
        *) die "unknown case $case" ;;
    esac
    [[ -n $result ]] || die "case $case failed"
    printf '%s\t%s\t%s\n' "$case" "$result" "$commit" | tee -a "$OUT"
done
