#!/usr/bin/env bash
# The cost of MCP-aware rules ([routes.mcp]): a rule check on POST tools/call, and the
# filtering of a 200-tool tools/list answer (application/json and text/event-stream), each
# against the same route without rules, through the same gateway, to the same upstream.
#
#   bench/rules.sh                                     # ~1½ minutes once the release build is up to date
#   BENCH_ROUNDS=3 BENCH_DURATION=5s bench/rules.sh    # every pair three times (~2½ minutes)
#   BENCH_OUT=BENCHMARKS.md bench/rules.sh             # also writes the "MCP rules and list
#                                                      # filtering" section there
#
# Knobs (environment): BENCH_DURATION (10s), BENCH_WARMUP (2s), BENCH_THREADS (2),
# BENCH_CONNECTIONS (64), BENCH_ROUNDS (1; with more, every case runs once per round and the
# report shows the median round, the range and the ratio of each round's pair), BENCH_BUILD
# (1; 0 = use the existing target/release binary), BENCH_OUT (unset: print only),
# BENCH_KEEP=1 keeps the temporary directory (configs, fixtures, logs, raw wrk output).
#
# Cases, in pairs (route without [routes.mcp] / the same route with it); within a round the
# pair runs back to back, and every other round the rules case goes first:
#   call   POST tools/call of an allowed tool (get_item_000; the 5th of 5 rules matches),
#          upstream nginx `return 200` with a ~100-byte JSON-RPC result
#   json   POST tools/list, upstream answers a 200-tool list as application/json (~66 KB);
#          with rules the caller sees 111 of them
#   sse    the same list as text/event-stream: one notification event, then the response
#          event (rewritten with rules; the notification passes as it came)
# API-key auth on every route, `[log] level = "warn"`.
#
# Everything listens on 127.0.0.1 on ports that were free a moment ago; every file lives in a
# mktemp directory; every process started here is stopped on exit. Nothing here asserts a
# timing: a target that answers anything but the expected status and body stops the run
# instead of being measured, and so does wrk seeing a non-2xx answer or a socket error.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
THREADS=${BENCH_THREADS:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
ROUNDS=${BENCH_ROUNDS:-1}
BUILD=${BENCH_BUILD:-1}
OUT=${BENCH_OUT:-}
if [[ -n $OUT && $OUT != /* ]]; then OUT="$PWD/$OUT"; fi

for tool in wrk nginx openssl python3 curl; do
    command -v "$tool" >/dev/null || { echo "rules: $tool is required" >&2; exit 1; }
done

WORK=$(mktemp -d -t mcp-gw-rules.XXXXXX)
PIDS=()

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        echo "rules: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
    echo "rules: FAILED: $*" >&2
    exit 1
}

log() { echo "rules: $(date +%T) $*" >&2; }

# ---------------------------------------------------------------------------------------------
# Build.

if [[ $BUILD == 1 ]]; then
    command -v cargo >/dev/null || die "cargo is required (or BENCH_BUILD=0 with a built binary)"
    log "building the gateway (release)"
    (cd "$ROOT" && cargo build --release --locked)
fi
GATEWAY_BIN="$ROOT/target/release/mcp-auth-gateway"
[[ -x $GATEWAY_BIN ]] || die "no binary at $GATEWAY_BIN"

# ---------------------------------------------------------------------------------------------
# Ports: ask the kernel for free ones, all at once so they differ.

read -r UP_PORT GW_PORT < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)

# ---------------------------------------------------------------------------------------------
# Upstream: one nginx instance.
#   /call       `return 200` with a fixed JSON-RPC result (id 1), whatever the method;
#   /list-json  a static file: the 200-tool tools/list answer (id 1), application/json;
#   /list-sse   a static file: a notification event, then the same answer as an event,
#               text/event-stream.
# nginx's static module answers POST with 405; `error_page 405 =200 $uri` serves the file
# instead (an internal GET, status 200). The files are too long for `return` (nginx refuses
# a configuration token over 4 KB).

mkdir -p "$WORK/upstream/www"
python3 "$BENCH/rules_tools.py" fixtures "$WORK/upstream/www"
mv "$WORK/upstream/www/all.txt" "$WORK/upstream/www/expected-visible.txt" "$WORK/"

CALL_BODY='{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hello from the bench upstream"}]}}'
CALL_REQUEST='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_item_000","arguments":{"id":"42"}}}'
LIST_REQUEST='{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}'

# When run as root, nginx workers would run as nobody and could not read the files in the
# mktemp directory (mode 700): keep them as the invoking user.
NGINX_USER=""
if [[ $EUID == 0 ]]; then NGINX_USER="user root root;"; fi

cat >"$WORK/upstream/nginx.conf" <<EOF
$NGINX_USER
worker_processes auto;
daemon off;
pid $WORK/upstream/nginx.pid;
error_log $WORK/upstream/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path $WORK/upstream/client_body;
    proxy_temp_path $WORK/upstream/proxy;
    fastcgi_temp_path $WORK/upstream/fastcgi;
    uwsgi_temp_path $WORK/upstream/uwsgi;
    scgi_temp_path $WORK/upstream/scgi;
    server {
        listen 127.0.0.1:$UP_PORT;
        root $WORK/upstream/www;
        location = /call {
            default_type application/json;
            return 200 '$CALL_BODY';
        }
        location = /list-json {
            types { }
            default_type application/json;
            error_page 405 =200 \$uri;
        }
        location = /list-sse {
            types { }
            default_type text/event-stream;
            error_page 405 =200 \$uri;
        }
    }
}
EOF

nginx -t -q -p "$WORK/upstream" -e "$WORK/upstream/error.log" -c "$WORK/upstream/nginx.conf" \
    || die "the upstream nginx config is invalid"
nginx -p "$WORK/upstream" -e "$WORK/upstream/error.log" -c "$WORK/upstream/nginx.conf" &
UP_PID=$!
PIDS+=("$UP_PID")

# ---------------------------------------------------------------------------------------------
# Gateway: one instance, six routes. p-* have no [routes.mcp]; r-* have the same upstream and
# the rules below (kept in step with bench/rules_tools.py, which knows who sees what).

API_KEY="bench-$(openssl rand -hex 16)"
API_KEY_HASH=$(printf '%s' "$API_KEY" | "$GATEWAY_BIN" hash-key)
[[ $API_KEY_HASH == sha256:* ]] || die "hash-key printed $API_KEY_HASH"

RULES=$(cat <<'EOF'
[routes.mcp]
default = "deny"

[[routes.mcp.rules]]
name = "no-deletes"
tools = ["delete_*"]
deny = true

[[routes.mcp.rules]]
name = "deploy-needs-admin"
tools = ["deploy"]
scopes = ["admin"]

[[routes.mcp.rules]]
name = "ops-group"
tools = ["ops_*"]
groups = ["ops"]

[[routes.mcp.rules]]
name = "search-needs-scope"
tools = ["search_*"]
scopes = ["mcp:search"]

[[routes.mcp.rules]]
name = "reads"
tools = ["get_*", "list_*"]
allow = true
EOF
)

route() { # $1 = id (= path), $2 = upstream path, $3 = "rules" or ""
    cat <<EOF

[[routes]]
id = "$1"
path = "/$1"
upstream = "http://127.0.0.1:$UP_PORT/$2"
verifiers = ["api_keys"]
scopes = ["mcp:tools"]
EOF
    if [[ $3 == rules ]]; then
        echo
        echo "$RULES"
    fi
}

{
    cat <<EOF
[server]
listen = ["127.0.0.1:$GW_PORT"]
public_url = "http://127.0.0.1:$GW_PORT"
allowed_hosts = ["127.0.0.1"]

[log]
format = "json"
level = "warn"

[[api_keys]]
id = "bench"
hash = "$API_KEY_HASH"
subject = "bench-user"
scopes = ["mcp:tools"]
EOF
    route p-call call ""
    route r-call call rules
    route p-json list-json ""
    route r-json list-json rules
    route p-sse list-sse ""
    route r-sse list-sse rules
} >"$WORK/gateway.toml"

"$GATEWAY_BIN" check --config "$WORK/gateway.toml" >"$WORK/gateway.check" 2>&1 \
    || { cat "$WORK/gateway.check" >&2; die "the gateway config does not compile"; }
env -u RUST_LOG "$GATEWAY_BIN" serve --config "$WORK/gateway.toml" >"$WORK/gateway.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")

wait_ready() { # $1 = url, $2 = pid
    for _ in $(seq 100); do
        kill -0 "$2" 2>/dev/null || die "process $2 for $1 exited (logs in $WORK)"
        if curl -sS -o /dev/null "$1" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "$1 did not come up"
}

wait_ready "http://127.0.0.1:$UP_PORT/call" "$UP_PID"
wait_ready "http://127.0.0.1:$GW_PORT/healthz" "$GW_PID"

# ---------------------------------------------------------------------------------------------
# Correctness first: every target must answer what we expect, or nothing is measured.

UP="http://127.0.0.1:$UP_PORT"
GW="http://127.0.0.1:$GW_PORT"
AUTH="Authorization: Bearer $API_KEY"
MCP_HEADERS=(-H "Content-Type: application/json" -H "Accept: application/json, text/event-stream")

post() { # $1 = expected status, $2 = url, $3 = body, then curl args; the answer in $WORK/answer
    local want=$1 url=$2 body=$3 got
    shift 3
    got=$(curl -sS -o "$WORK/answer" -D "$WORK/answer.head" -w '%{http_code}' -X POST \
        "${MCP_HEADERS[@]}" --data-binary "$body" "$@" "$url") || die "curl $url failed"
    [[ $got == "$want" ]] || {
        head -c 600 "$WORK/answer" >&2
        die "$url answered $got, expected $want"
    }
}

expect_body() { # $1 = url: the last answer must be exactly $2
    [[ $(cat "$WORK/answer") == "$2" ]] || {
        head -c 600 "$WORK/answer" >&2
        die "$1 answered an unexpected body"
    }
}

call_of() { # $1 = tool name
    printf '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"%s","arguments":{}}}' "$1"
}

log "checking every target answers as expected"
post 200 "$UP/call" "$CALL_REQUEST"
expect_body "$UP/call" "$CALL_BODY"
post 200 "$UP/list-json" "$LIST_REQUEST"
python3 "$BENCH/rules_tools.py" check-json "$WORK/answer" "$WORK/all.txt" >/dev/null
post 200 "$UP/list-sse" "$LIST_REQUEST"
python3 "$BENCH/rules_tools.py" check-sse "$WORK/answer" "$WORK/all.txt" >/dev/null

for r in p-call r-call; do
    post 200 "$GW/$r" "$CALL_REQUEST" -H "$AUTH"
    expect_body "$GW/$r" "$CALL_BODY"
    CALL_BYTES=$(stat -c %s "$WORK/answer")
    post 401 "$GW/$r" "$CALL_REQUEST"
done
# Without rules anything goes through; with them the rules decide (and would be measured).
post 200 "$GW/p-call" "$(call_of delete_item_000)" -H "$AUTH"
expect_body "$GW/p-call" "$CALL_BODY"
post 200 "$GW/r-call" "$(call_of delete_item_000)" -H "$AUTH"
grep -q -- '-32001' "$WORK/answer" && grep -q 'no-deletes' "$WORK/answer" \
    || { cat "$WORK/answer" >&2; die "r-call did not refuse delete_item_000 by rule no-deletes"; }
post 200 "$GW/r-call" "$(call_of internal_item_000)" -H "$AUTH"
grep -q -- '-32001' "$WORK/answer" || die "r-call did not refuse internal_item_000 (default deny)"
post 403 "$GW/r-call" "$(call_of deploy)" -H "$AUTH"
grep -qi 'insufficient_scope' "$WORK/answer.head" || die "r-call refused deploy without an insufficient_scope challenge"

framing() { # how the last answer's body was delimited
    if grep -qi '^transfer-encoding:.*chunked' "$WORK/answer.head"; then echo chunked
    elif grep -qi '^content-length:' "$WORK/answer.head"; then echo content-length
    else echo close; fi
}

declare -A ANSWER_BYTES FRAMING
for kind in json sse; do
    post 200 "$GW/p-$kind" "$LIST_REQUEST" -H "$AUTH"
    N=$(python3 "$BENCH/rules_tools.py" "check-$kind" "$WORK/answer" "$WORK/all.txt") \
        || die "p-$kind: the list did not come through whole"
    ANSWER_BYTES[p-$kind]=$(stat -c %s "$WORK/answer")
    FRAMING[p-$kind]=$(framing)
    post 200 "$GW/r-$kind" "$LIST_REQUEST" -H "$AUTH"
    grep -qi "^content-type: $([[ $kind == json ]] && echo application/json || echo text/event-stream)" \
        "$WORK/answer.head" || die "r-$kind answered another content type"
    VISIBLE=$(python3 "$BENCH/rules_tools.py" "check-$kind" "$WORK/answer" "$WORK/expected-visible.txt") \
        || die "r-$kind: the list was not filtered as the rules say"
    ANSWER_BYTES[r-$kind]=$(stat -c %s "$WORK/answer")
    FRAMING[r-$kind]=$(framing)
    post 401 "$GW/r-$kind" "$LIST_REQUEST"
done
log "lists: $N tools without rules, $VISIBLE with them"

# ---------------------------------------------------------------------------------------------
# Measurements.

RESULTS="$WORK/results"
mkdir -p "$RESULTS"
: >"$RESULTS/cases.tsv"

lua_post() { # $1 = file, $2 = body
    cat >"$1" <<EOF
wrk.method = "POST"
wrk.body = [[$2]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
EOF
}
lua_post "$WORK/call.lua" "$CALL_REQUEST"
lua_post "$WORK/list.lua" "$LIST_REQUEST"

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

# bench <id> <lua script>: wrk at $GW/<id> with the API key
bench() {
    local id=$1 script=$2 url="$GW/$1" file
    file="$RESULTS/$id.r$ROUND"
    log "round $ROUND/$ROUNDS: wrk $id"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s "$script" -H "$AUTH" "$url" >"$file.warmup" 2>&1 \
        || die "wrk warm-up for $id failed: $(cat "$file.warmup")"
    if grep -q -E 'Non-2xx or 3xx responses|Socket errors' "$file.warmup"; then
        cat "$file.warmup" >&2
        die "$id: errors during warm-up"
    fi
    local cpu0 up0 m0 cpu1 up1 m1 wrk_cpu
    cpu0=$(cpu_ticks "$GW_PID")
    up0=$(cpu_ticks "$UP_PID")
    m0=$(machine_ticks)
    wrk_cpu=$( { TIMEFORMAT='%U %S'; time wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
        -s "$script" -H "$AUTH" "$url" >"$file.wrk" 2>&1; } 2>&1) || die "wrk $id failed: $(cat "$file.wrk")"
    m1=$(machine_ticks)
    cpu1=$(cpu_ticks "$GW_PID")
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
    for pair in "call call.lua" "json list.lua" "sse list.lua"; do
        read -r kind script <<<"$pair"
        if (( ROUND % 2 == 1 )); then
            bench "p-$kind" "$WORK/$script"
            bench "r-$kind" "$WORK/$script"
        else
            bench "r-$kind" "$WORK/$script"
            bench "p-$kind" "$WORK/$script"
        fi
    done
done

# The rules route must still filter after the load (and the gateway must still be there).
post 200 "$GW/r-sse" "$LIST_REQUEST" -H "$AUTH"
python3 "$BENCH/rules_tools.py" check-sse "$WORK/answer" "$WORK/expected-visible.txt" >/dev/null \
    || die "r-sse stopped filtering during the run"
# Lines at warn or above, start-up configuration diagnostics (they carry a "key") left out.
GW_LOG_LINES=$(grep -c -v '"key":' "$WORK/gateway.log" || true)

# ---------------------------------------------------------------------------------------------
# Report.

COMMAND=""
for knob in BENCH_DURATION BENCH_WARMUP BENCH_THREADS BENCH_CONNECTIONS BENCH_ROUNDS BENCH_BUILD BENCH_OUT; do
    if [[ -n ${!knob:-} ]]; then COMMAND+="$knob=${!knob} "; fi
done
COMMAND+="bench/rules.sh"

cat >"$RESULTS/meta.env" <<EOF
command=$COMMAND
date=$(date -u '+%Y-%m-%d %H:%M UTC')
commit=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' (with uncommitted changes in src/)')
rustc=$(rustc --version 2>/dev/null || echo unknown)
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
rounds=$ROUNDS
quiet_busy_pct=$QUIET_BUSY_PCT
call_request_bytes=${#CALL_REQUEST}
list_request_bytes=${#LIST_REQUEST}
call_answer_bytes=$CALL_BYTES
tools_all=$N
tools_visible=$VISIBLE
answer_bytes_p_json=${ANSWER_BYTES[p-json]}
answer_bytes_r_json=${ANSWER_BYTES[r-json]}
answer_bytes_p_sse=${ANSWER_BYTES[p-sse]}
answer_bytes_r_sse=${ANSWER_BYTES[r-sse]}
framing_p_json=${FRAMING[p-json]}
framing_r_json=${FRAMING[r-json]}
framing_p_sse=${FRAMING[p-sse]}
framing_r_sse=${FRAMING[r-sse]}
gateway_log_lines=$GW_LOG_LINES
EOF

python3 "$BENCH/rules_report.py" "$RESULTS" ${OUT:+"$OUT"}
[[ -z $OUT ]] || log "section written to $OUT"
