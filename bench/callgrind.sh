#!/usr/bin/env bash
# Instructions per delivery, counted by callgrind: ours and the floor.
#
# Each server runs under `valgrind --tool=callgrind --instr-atstart=no
# --separate-threads=yes`; `chat-bench drive` logs in the clients and sends
# WARMUP messages so that buffers reach their working size (neither counted),
# turns instrumentation on (`callgrind_control -i on`), sends a fixed number
# of messages from the senders in a closed window, waits for every copy,
# turns it off and exits; the server then gets SIGTERM so callgrind writes
# its files. The figure is the Ir of the server's main thread (the event
# loop; auth worker threads are reported apart) divided by the deliveries the
# clients counted (one message line received by one recipient).
# Instruction counts are user space only and do not depend on the machine's
# load, so the figure repeats where CPU time does not.
#
# Usage: bash bench/callgrind.sh   (make bench-callgrind)
# Environment: CLIENTS (100), SENDERS (10), MESSAGES (10000), WARMUP (2000,
# not counted), WINDOWS ("1 64": one run of each server per window, the
# messages each sender keeps not yet delivered to all), TOP (25 functions),
# OUT (bench/results/callgrind.md), RAW (bench/results/callgrind: the
# callgrind files, and <server>-w<window>-top.txt: the top functions by
# exclusive and inclusive Ir and Ir per delivery).
# 127.0.0.1 only; every step is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/release"
CLIENTS="${CLIENTS:-100}"
SENDERS="${SENDERS:-10}"
MESSAGES="${MESSAGES:-10000}"
WINDOWS="${WINDOWS:-1 64}"
WARMUP="${WARMUP:-2000}"
TOP="${TOP:-25}"
OUT="${OUT:-bench/results/callgrind.md}"
RAW="${RAW:-bench/results/callgrind}"
DRIVE_LIMIT=900 # seconds for one server's whole drive (logins + workload)

if ! command -v valgrind >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "callgrind: installing valgrind (Debian package)" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
    fi
fi
for tool in valgrind callgrind_control callgrind_annotate timeout; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "callgrind: $tool is missing (apt-get install valgrind)" >&2
        exit 1
    fi
done
for bin in chat-server chat-bench; do
    if [ ! -x "$target/$bin" ]; then
        echo "callgrind: $target/$bin not found: make build (cargo build --release --workspace --bins)" >&2
        exit 1
    fi
done

# Server on CPU 0, generator on CPU 1, as in make bench (counts do not need
# it, but the two then do not slow each other down).
pin_server=()
pin_gen=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
    pin_server=(taskset -c 0)
    pin_gen=(--cpu 1)
fi

mkdir -p "$RAW" "$(dirname "$OUT")"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

# Waits up to $2 seconds for process $1 to exit; SIGKILL after that.
wait_exit() {
    local pid=$1 limit=$2 i=0
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$i" -ge $((limit * 10)) ]; then
            echo "callgrind: process $pid did not exit in ${limit}s, killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
        i=$((i + 1))
    done
    wait "$pid" 2>/dev/null || true
}

# The Ir of one callgrind file: its "totals:" line (with --separate-threads
# and --instr-atstart=no, "summary:" says 0), else its "summary:" line.
total_ir() {
    awk '/^totals:/ { t = $2 } /^summary:/ { s = $2 }
         END { print (t != "" ? t : (s != "" ? s : 0)) }' "$1"
}

# top FILE DELIVERIES: the functions of FILE by exclusive and inclusive Ir
# and Ir per delivery. callgrind_annotate lists inlined code once per source
# file it came from: exclusive pieces are summed, and the inclusive figure is
# the largest piece (the function as called).
top() {
    local file=$1 del=$2 inc mode
    for inc in no yes; do
        mode=sum
        [ "$inc" = yes ] && mode=max
        echo "== $([ "$inc" = yes ] && echo inclusive || echo exclusive) Ir, $del deliveries"
        printf '%14s %9s  %s\n' Ir Ir/deliv function
        callgrind_annotate --auto=no --inclusive="$inc" --threshold=100 "$file" 2>/dev/null |
            awk -v mode="$mode" '
                /file:function/ { intable = 1; skip = 1; next }
                /^-+$/ { if (intable && !skip) done = 1; skip = 0; next }
                intable && !done && /^ *[0-9,]+ \( *[0-9.]+%\)  / {
                    n = $1; gsub(",", "", n)
                    line = $0
                    sub(/^ *[0-9,]+ \( *[0-9.]+%\)  /, "", line)
                    sub(/ \[[^]]*\]$/, "", line)
                    i = index(line, ":")
                    fn = i > 0 ? substr(line, i + 1) : line
                    if (mode == "max") { if (n + 0 > v[fn] + 0) v[fn] = n } else v[fn] += n
                }
                END { for (f in v) printf "%d\t%s\n", v[f], f }' |
            sort -t "$(printf '\t')" -k1,1nr | head -n "$TOP" |
            awk -F '\t' -v d="$del" '{ printf "%14d %9.1f  %s\n", $1, $1 / d, $2 }'
        echo
    done
}

# run_one NAME PROTOCOL COMMAND...: sets ir_main, ir_other, deliveries.
run_one() {
    local name=$1 proto=$2
    shift 2
    local base="$RAW/$name.out"
    rm -f "$base" "$base"-* "$RAW/$name.valgrind.log"
    echo "callgrind: $name: starting under callgrind" >&2
    "${pin_server[@]}" valgrind --tool=callgrind --instr-atstart=no \
        --separate-threads=yes --callgrind-out-file="$base" \
        --log-file="$RAW/$name.valgrind.log" "$@" 2>"$RAW/$name.stderr" &
    server_pid=$!
    local result
    if ! result=$(timeout "$DRIVE_LIMIT" "$target/chat-bench" drive \
        --server-pid "$server_pid" --protocol "$proto" \
        --clients "$CLIENTS" --senders "$SENDERS" \
        --messages "$MESSAGES" --window "$WINDOW" --warmup "$WARMUP" "${pin_gen[@]}" \
        --on-ready "callgrind_control -i on $server_pid >/dev/null" \
        --on-done "callgrind_control -i off $server_pid >/dev/null"); then
        echo "callgrind: $name: the drive failed: $result" >&2
        tail -5 "$RAW/$name.stderr" "$RAW/$name.valgrind.log" >&2 || true
        exit 1
    fi
    echo "callgrind: $name: $result" >&2
    # SIGTERM: ours shuts down; the floor dies of it, and valgrind still
    # writes the files.
    kill -TERM "$server_pid"
    wait_exit "$server_pid" 120
    server_pid=""
    deliveries=$(sed -n 's/.* received=\([0-9]*\).*/\1/p' <<<"$result")
    # --separate-threads: $base-01 is the main thread (the event loop).
    local main="$base-01"
    if [ ! -s "$main" ]; then
        echo "callgrind: $name: no $main written" >&2
        exit 1
    fi
    rm -f "$base" # empty with --separate-threads
    ir_main=$(total_ir "$main")
    top "$main" "$deliveries" >"$RAW/$name-top.txt" || true
    ir_other=0
    local f
    for f in "$base"-*; do
        [ "$f" = "$main" ] && continue
        ir_other=$((ir_other + $(total_ir "$f")))
    done
}

per() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }
rows=""
for window in $WINDOWS; do
    WINDOW=$window
    run_one "ours-w$window" chat "$target/chat-server" --port 0 --accounts :memory: --history :memory: \
        --hash-params m=256,t=1,p=1 --flood-rate 0 --log-level warn --max-clients $((CLIENTS + 100))
    ours_ir=$ir_main ours_other=$ir_other ours_del=$deliveries
    run_one "floor-w$window" floor "$target/chat-bench" floor --port 0
    floor_ir=$ir_main floor_other=$ir_other floor_del=$deliveries
    ours_per=$(per "$ours_ir" "$ours_del")
    floor_per=$(per "$floor_ir" "$floor_del")
    ratio=$(awk -v a="$ours_ir" -v b="$ours_del" -v c="$floor_ir" -v d="$floor_del" \
        'BEGIN { printf "%.2f", (a / b) / (c / d) }')
    rows+="| $window | ours | $ours_ir | $ours_del | $ours_per | $ours_other | $ratio |"$'\n'
    rows+="| $window | floor | $floor_ir | $floor_del | $floor_per | $floor_other | 1.00 |"$'\n'
done
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=""
if ! git diff --quiet HEAD -- src 2>/dev/null; then dirty="+changes"; fi

table=$(
    cat <<EOF
Callgrind, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit ${commit}${dirty}, $(valgrind --version).
Workload: C=$CLIENTS logged-in clients, $SENDERS senders, $MESSAGES messages of ~64 bytes
after $WARMUP not counted; each sender keeps at most "window" messages not yet
delivered to all (window 1: one line per read, the steady figure; window 64:
batched reads, as in make bench's closed loop, where the floor's cost depends on
how many lines one read brings). Counted from the first message to the last
delivery (logins, startup, warm-up and shutdown excluded). Ir = user-space
instructions of the server's event-loop thread; other threads (auth workers)
in their own column.

| window | server | Ir total | deliveries | Ir/delivery | other threads Ir | ratio ours/floor |
|---:|---|---:|---:|---:|---:|---:|
${rows%$'\n'}
EOF
)
printf '%s\n' "$table" >"$OUT"
printf '\n%s\n\n' "$table"
echo "callgrind: wrote $OUT; callgrind files and <server>-w<window>-top.txt in $RAW" >&2
