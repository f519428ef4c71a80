#!/usr/bin/env bash
# Benchmark of fcgi-launch's built-in `hello` handler.
#
# Runs three FastCGI servers on a unix socket, one after the other, under the
# same load, and prints medians:
#   fcgi-launch   fcgi-launch --bind unix:SOCK --builtin hello --workers THREADS
#   libfcgi       libfcgi_hello.c: threaded libfcgi, THREADS accept loops
#   limit         limit.c: one read() and one write() per request
# in four cells: {1, 16} connections x {new connection per request,
# FCGI_KEEP_CONN}. In each cell the servers are interleaved for ROUNDS rounds
# (the order rotates each round) so slow drifts of the machine hit all three.
# Runs are short and many rather than long and few: on a small machine one
# run's figure depends a lot on where the scheduler puts the client and
# server threads (same core or not), which holds for a whole run, so more
# runs give a steadier median. Takes about 3 minutes after the build.
#
# Needs, on Debian/Ubuntu:
#   apt-get install -y gcc libfcgi-dev
# and a Rust toolchain (cargo). Run from anywhere:
#   bash tests/bench/hello.sh
#
# Settings (environment):
#   THREADS=N        worker threads of fcgi-launch and libfcgi (default:
#                    fcgi-launch's own default, two per CPU the servers may
#                    run on, at least 2: fcgi-launch as shipped)
#   ROUNDS=N         rounds per cell (default 5)
#   RUN_SECONDS=S    length of one run (default 2)
#   CONNS="1 16"     connection counts of the cells
#   SERVERS="fcgi-launch libfcgi limit"   which servers to run
#   FCGI_LAUNCH=PATH use this fcgi-launch binary instead of building one
#   PIN=1            pin the load generator to CPU 0 and the servers to the
#                    other CPUs (needs taskset and 2+ cores): steadier
#                    figures at 1 connection, but the servers get one core
#                    less than the machine has
#   STRICT=1         exit 1 when fcgi-launch misses a target
#   KEEP_TMP=1       keep the temporary directory (binaries, server logs)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

PIN=${PIN:-0}
# fcgi-launch's default --workers: two per CPU it may run on, at least 2
# (default_workers in src/launch.rs; unlike Rust's available_parallelism,
# nproc does not count cgroup CPU quotas). PIN=1 leaves the servers every
# CPU but the first.
cpus=$(nproc 2>/dev/null || echo 1)
if [[ $PIN == 1 ]]; then
    cpus=$((cpus - 1))
fi
THREADS=${THREADS:-$((cpus * 2 > 2 ? cpus * 2 : 2))}
ROUNDS=${ROUNDS:-5}
RUN_SECONDS=${RUN_SECONDS:-2}
CONNS=${CONNS:-"1 16"}
SERVERS=${SERVERS:-"fcgi-launch libfcgi limit"}
STRICT=${STRICT:-0}
KEEP_TMP=${KEEP_TMP:-0}

die() { echo "hello.sh: $*" >&2; exit 1; }

[[ $THREADS =~ ^[1-9][0-9]*$ ]] || die "THREADS must be a positive integer"
[[ $ROUNDS =~ ^[1-9][0-9]*$ && $ROUNDS -le 50 ]] || die "ROUNDS must be 1..50"
[[ $RUN_SECONDS =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "RUN_SECONDS must be a number"
for c in $CONNS; do
    [[ $c =~ ^[1-9][0-9]*$ && $c -le 1000 ]] || die "CONNS: bad count $c"
done
read -r -a servers <<<"$SERVERS"
for s in "${servers[@]}"; do
    case $s in fcgi-launch | libfcgi | limit) ;; *) die "SERVERS: unknown $s" ;; esac
done
((${#servers[@]} > 0)) || die "SERVERS is empty"
has_server() {
    local s
    for s in "${servers[@]}"; do [[ $s == "$1" ]] && return 0; done
    return 1
}

# --- prerequisites -----------------------------------------------------------
missing=()
command -v gcc >/dev/null 2>&1 || missing+=("gcc (apt-get install -y gcc)")
command -v cargo >/dev/null 2>&1 || missing+=("cargo (a Rust toolchain, e.g. from rustup)")
if has_server libfcgi && [[ ! -f /usr/include/fcgiapp.h ]]; then
    missing+=("libfcgi headers (apt-get install -y libfcgi-dev)")
fi
if ((${#missing[@]})); then
    echo "hello.sh: missing prerequisites:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
fi

client_pin=() server_pin=()
if [[ $PIN == 1 ]]; then
    command -v taskset >/dev/null 2>&1 || die "PIN=1 needs taskset (apt-get install -y util-linux)"
    # cpus: the CPUs left to the servers (see THREADS above).
    ((cpus >= 1)) || die "PIN=1 needs at least 2 cores"
    client_pin=(taskset -c 0)
    server_pin=(taskset -c "1-$cpus")
fi

# --- temporary directory and cleanup -----------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fcgi-bench.XXXXXX")
declare -a started_pids=()

stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "hello.sh: pid $pid ignored SIGTERM for 2 s, sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local pid
    for pid in ${started_pids[@]+"${started_pids[@]}"}; do
        stop_pid "$pid"
    done
    started_pids=()
    if [[ $KEEP_TMP == 1 ]]; then
        echo "hello.sh: kept $tmp" >&2
    else
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- build -------------------------------------------------------------------
build() { # build LABEL COMMAND...: quiet unless it fails
    local label=$1 log="$tmp/build-$1.log"
    shift
    printf '  %-12s ' "$label"
    if "$@" >"$log" 2>&1; then
        echo ok
    else
        echo FAILED
        tail -n 30 "$log" >&2
        die "building $label failed (full log: $log; KEEP_TMP=1 keeps it)"
    fi
}

echo "Building (in $tmp)"
fcgi_launch=""
if has_server fcgi-launch; then
    if [[ -n ${FCGI_LAUNCH:-} ]]; then
        [[ -x $FCGI_LAUNCH ]] || die "FCGI_LAUNCH=$FCGI_LAUNCH is not executable"
        fcgi_launch=$FCGI_LAUNCH
        echo "  fcgi-launch  using $fcgi_launch"
    else
        build fcgi-launch cargo build --release --manifest-path "$root/Cargo.toml"
        fcgi_launch="${CARGO_TARGET_DIR:-$root/target}/release/fcgi-launch"
        [[ -x $fcgi_launch ]] || die "no binary at $fcgi_launch after the build"
    fi
fi
if has_server libfcgi; then
    build libfcgi gcc -O2 -Wall -o "$tmp/libfcgi_hello" "$here/libfcgi_hello.c" -lfcgi -lpthread
fi
if has_server limit; then
    build limit gcc -O2 -Wall -o "$tmp/limit" "$here/limit.c" -lpthread
fi
build loadgen cargo build --release --manifest-path "$here/loadgen/Cargo.toml" \
    --target-dir "$tmp/loadgen-target"
loadgen="$tmp/loadgen-target/release/fcgi-loadgen"

# --- one run -----------------------------------------------------------------
server_pid=""

start_server() { # start_server NAME SOCKET
    local name=$1 sock=$2 i
    local cmd=()
    case $name in
    fcgi-launch) cmd=("$fcgi_launch" --bind "unix:$sock" --builtin hello --workers "$THREADS") ;;
    libfcgi) cmd=("$tmp/libfcgi_hello" "$sock" "$THREADS") ;;
    limit) cmd=("$tmp/limit" "$sock") ;;
    esac
    rm -f "$sock"
    # A simple command (taskset execs), so $! is the server, not a subshell.
    "${server_pin[@]+"${server_pin[@]}"}" "${cmd[@]}" </dev/null >>"$tmp/$name.log" 2>&1 &
    server_pid=$!
    started_pids+=("$server_pid")
    for ((i = 0; i < 100; i++)); do # up to 5 s
        [[ -S $sock ]] && return 0
        if ! kill -0 "$server_pid" 2>/dev/null; then
            break
        fi
        sleep 0.05
    done
    echo "hello.sh: $name did not create $sock; its log:" >&2
    tail -n 20 "$tmp/$name.log" >&2
    return 1
}

stop_server() {
    local pid=$server_pid p
    [[ -n $pid ]] || return 0
    stop_pid "$pid"
    local keep=()
    for p in "${started_pids[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    started_pids=("${keep[@]+"${keep[@]}"}")
    server_pid=""
}

field() { # field NAME "RESULT k=v ..."
    local kv
    for kv in $2; do
        [[ $kv == "$1="* ]] && { echo "${kv#*=}"; return; }
    done
    echo 0
}

results="$tmp/results"
: >"$results"

run_one() { # run_one CELL NAME CONNS KEEP ROUND
    local cell=$1 name=$2 conns=$3 keep=$4 round=$5 sock="$tmp/$2.sock" line
    local args=(--socket "$sock" --conns "$conns" --seconds "$RUN_SECONDS" --wait 5 --quiet)
    [[ $keep == 1 ]] && args+=(--keep-conn)
    if start_server "$name" "$sock"; then
        line=$("${client_pin[@]+"${client_pin[@]}"}" "$loadgen" "${args[@]}" 2>>"$tmp/loadgen.log" | grep '^RESULT ' || true)
    else
        line=""
    fi
    stop_server
    [[ -n $line ]] || line="RESULT rps=0 requests=0 errors=1 min=0 mean=0 max=0 served_all=0"
    local rps min mean errors all
    rps=$(field rps "$line")
    min=$(field min "$line")
    mean=$(field mean "$line")
    errors=$(field errors "$line")
    all=$(field served_all "$line")
    echo "$cell $name $round $rps $min $mean $errors $all" >>"$results"
    printf '    round %d  %-12s %10.0f req/s   least/mean served %s/%s   errors %s\n' \
        "$round" "$name" "$rps" "$min" "$mean" "$errors"
}

# --- is the machine quiet? --------------------------------------------------
cpu_busy_percent() { # over 1 s, from /proc/stat
    local a b
    read -r -a a < <(grep '^cpu ' /proc/stat)
    sleep 1
    read -r -a b < <(grep '^cpu ' /proc/stat)
    awk -v a="${a[*]}" -v b="${b[*]}" 'BEGIN {
        n = split(a, x, " "); split(b, y, " ")
        for (i = 2; i <= n; i++) { d = y[i] - x[i]; t += d; if (i == 5 || i == 6) idle += d }
        printf "%.0f", t > 0 ? 100 * (t - idle) / t : 0 }'
}
if [[ -r /proc/stat ]]; then
    busy=$(cpu_busy_percent)
    if ((busy > 15)); then
        echo
        echo "WARNING: the CPUs were ${busy}% busy before the runs; other work skews the figures."
    fi
fi

# --- the cells ---------------------------------------------------------------
declare -a cells=()
echo
echo "Running: ${#servers[@]} servers x $ROUNDS rounds x ${RUN_SECONDS} s per cell;" \
    "THREADS=$THREADS on $(nproc 2>/dev/null || echo '?') cores$([[ $PIN == 1 ]] && echo ', pinned')"
for conns in $CONNS; do
    for keep in 0 1; do
        cell="c${conns}k${keep}"
        cells+=("$cell")
        if [[ $keep == 1 ]]; then mode="keep-conn"; else mode="new connection per request"; fi
        echo "  $conns connection(s), $mode"
        for ((round = 1; round <= ROUNDS; round++)); do
            n=${#servers[@]}
            for ((j = 0; j < n; j++)); do
                name=${servers[$(((round - 1 + j) % n))]}
                run_one "$cell" "$name" "$conns" "$keep" "$round"
            done
        done
    done
done

# --- report ------------------------------------------------------------------
# median CELL NAME COLUMN: median of that column over the rounds
median() {
    awk -v c="$1" -v s="$2" -v col="$3" '
        $1 == c && $2 == s { v[n++] = $col }
        END {
            if (n == 0) { print "-"; exit }
            for (i = 0; i < n; i++) for (j = i + 1; j < n; j++)
                if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
            if (n % 2) m = v[(n - 1) / 2]; else m = (v[n / 2 - 1] + v[n / 2]) / 2
            print m
        }' "$results"
}
# sum CELL NAME COLUMN
sum() { awk -v c="$1" -v s="$2" -v col="$3" '$1 == c && $2 == s { t += $col } END { print t + 0 }' "$results"; }
# all_served CELL NAME: 1 when every round served every connection
all_served() {
    awk -v c="$1" -v s="$2" '$1 == c && $2 == s { n++; if ($8 != 1) bad++ }
        END { print (n > 0 && bad == 0) ? 1 : 0 }' "$results"
}
label() {
    local conns=${1#c} keep=${1##*k}
    conns=${conns%k*}
    if [[ $keep == 1 ]]; then echo "$conns conn, keep-conn"; else echo "$conns conn, new conn/request"; fi
}
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b; else print "-" }'; }
whole() { if [[ $1 == - ]]; then echo -; else printf '%.0f' "$1"; fi; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }

echo
echo "Requests/s, median of $ROUNDS runs of ${RUN_SECONDS} s (THREADS=$THREADS)"
printf '%-26s %12s %12s %12s   %9s %11s\n' "cell" "fcgi-launch" "libfcgi" "limit" "% of limit" "vs libfcgi"
for cell in "${cells[@]}"; do
    f=$(median "$cell" fcgi-launch 4)
    l=$(median "$cell" libfcgi 4)
    m=$(median "$cell" limit 4)
    p="-" r="-"
    [[ $f != - && $m != - ]] && p=$(pct "$f" "$m")
    [[ $f != - && $l != - ]] && r=$(ratio "$f" "$l")
    printf '%-26s %12s %12s %12s   %9s %11s\n' "$(label "$cell")" "$(whole "$f")" "$(whole "$l")" "$(whole "$m")" "$p" "$r"
done

echo
echo "Served per connection: least / mean (medians), rounds with every connection"
echo "served (least >= mean/2), and errors summed over the rounds"
printf '%-26s' "cell"
for s in "${servers[@]}"; do printf ' %32s' "$s"; done
echo
for cell in "${cells[@]}"; do
    printf '%-26s' "$(label "$cell")"
    for s in "${servers[@]}"; do
        mn=$(median "$cell" "$s" 5)
        me=$(median "$cell" "$s" 6)
        ok=$(awk -v c="$cell" -v s="$s" '$1 == c && $2 == s && $8 == 1 { k++ } $1 == c && $2 == s { n++ }
            END { printf "%d/%d", k, n }' "$results")
        er=$(sum "$cell" "$s" 7)
        printf ' %32s' "$(printf '%.0f/%.0f  all %s  err %s' "$mn" "$me" "$ok" "$er")"
    done
    echo
done

# --- targets -----------------------------------------------------------------
if has_server fcgi-launch; then
    echo
    echo "Targets for fcgi-launch"
    missed=0
    verdict() { # verdict OK TEXT
        if [[ $1 == 1 ]]; then echo "  PASS  $2"; else echo "  MISS  $2"; missed=$((missed + 1)); fi
    }
    for cell in "${cells[@]}"; do
        conns=${cell#c}
        conns=${conns%k*}
        f=$(median "$cell" fcgi-launch 4)
        verdict "$(all_served "$cell" fcgi-launch)" "$(label "$cell"): every connection served in every round"
        if has_server limit; then
            m=$(median "$cell" limit 4)
            want=80
            ((conns == 1)) && want=90
            ok=$(awk -v f="$f" -v m="$m" -v w="$want" 'BEGIN { print (m > 0 && 100 * f >= w * m) ? 1 : 0 }')
            verdict "$ok" "$(label "$cell"): >= ${want}% of the limit ($(pct "$f" "$m"))"
        fi
        if has_server libfcgi; then
            l=$(median "$cell" libfcgi 4)
            if [[ $(all_served "$cell" libfcgi) == 1 ]]; then
                ok=$(awk -v f="$f" -v l="$l" 'BEGIN { print (f >= l) ? 1 : 0 }')
                verdict "$ok" "$(label "$cell"): >= libfcgi's requests/s ($(ratio "$f" "$l"))"
            else
                echo "  n/a   $(label "$cell"): libfcgi left connections unserved, no comparison"
            fi
        fi
    done
    if ((missed > 0)); then
        echo "  $missed target(s) missed"
        [[ $STRICT == 1 ]] && exit 1
    else
        echo "  all targets met"
    fi
fi
exit 0
