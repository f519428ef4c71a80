#!/usr/bin/env bash
# Benchmark: a tiny CGI program behind nginx, fcgi-launch against fcgiwrap.
#
# One nginx, two locations, one script (fixtures/tiny.cgi):
#   /fcgi-launch/tiny.cgi  fastcgi_pass to fcgi-launch --bind unix:... -w WORKERS
#   /fcgiwrap/tiny.cgi     fastcgi_pass to fcgiwrap -s unix:... -c WORKERS
# and beside them the spawn floor (spawn_floor.c): threads that posix_spawn
# the same script and read its output, no web server and no FastCGI, the
# least any launcher can do per request.
#
# For each connection count (1 and 16) it runs ROUNDS rounds; in each round
# wrk loads each location for RUN_SECONDS and spawn_floor runs as many
# threads as wrk has connections, the order rotating from round to round so
# slow drifts of the machine hit all three alike. It prints each run, then
# the medians, the ratio fcgi-launch/fcgiwrap, each as a percentage of the
# floor, the error counts (non-2xx responses and socket errors from wrk,
# failed runs from spawn_floor: all must be 0) and the targets:
#   - fcgi-launch at least fcgiwrap's requests/s at every connection count
#   - fcgi-launch at least 1.2x fcgiwrap's requests/s at 1 connection
#
# nginx runs with `worker_processes 1`: its work per request is small next
# to starting a shell, one event loop serves 16 connections without
# queueing, and one worker keeps nginx's share of a small machine's CPUs
# the same for both launchers (more workers would only compete with the
# launchers and wrk for the same cores). FastCGI connections are not kept
# alive (nginx's default, and all fcgiwrap supports): a new unix socket
# connection per request, for both.
#
# Needs, on Debian/Ubuntu:
#   apt-get install -y gcc nginx fcgiwrap wrk curl
# and a Rust toolchain (cargo). Run from anywhere:
#   bash tests/bench/cgi.sh
# Takes about 2 x ROUNDS x 3 x RUN_SECONDS seconds after the build (about
# 1.5 minutes with the defaults).
#
# Settings (environment):
#   WORKERS=N        fcgi-launch -w N and fcgiwrap -c N (default: the number
#                    of cores)
#   ROUNDS=N         rounds per connection count (default 5, at least 3)
#   RUN_SECONDS=S    length of one run, whole seconds (default 3)
#   CONNS="1 16"     connection counts
#   PORT=P           nginx's loopback port (default 38471; the next free one
#                    of the 20 after it is taken if it is busy)
#   FCGI_LAUNCH=PATH use this fcgi-launch binary instead of building one
#   STRICT=1         exit 1 when fcgi-launch misses a target or errors occur
#   KEEP_TMP=1       keep the temporary directory (configuration, logs)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
script="$here/fixtures/tiny.cgi"

WORKERS=${WORKERS:-$(nproc 2>/dev/null || echo 2)}
ROUNDS=${ROUNDS:-5}
RUN_SECONDS=${RUN_SECONDS:-3}
CONNS=${CONNS:-"1 16"}
PORT=${PORT:-38471}
STRICT=${STRICT:-0}
KEEP_TMP=${KEEP_TMP:-0}

die() { echo "cgi.sh: $*" >&2; exit 1; }

[[ $WORKERS =~ ^[1-9][0-9]*$ && $WORKERS -le 256 ]] || die "WORKERS must be 1..256"
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -ge 3 && $ROUNDS -le 50 ]] || die "ROUNDS must be 3..50"
[[ $RUN_SECONDS =~ ^[1-9][0-9]*$ && $RUN_SECONDS -le 600 ]] || die "RUN_SECONDS must be 1..600"
[[ $PORT =~ ^[0-9]+$ && $PORT -ge 1024 && $PORT -le 65000 ]] || die "PORT must be 1024..65000"
for c in $CONNS; do
    [[ $c =~ ^[1-9][0-9]*$ && $c -le 1000 ]] || die "CONNS: bad count $c"
done
[[ -x $script ]] || die "$script is missing or not executable"

# --- prerequisites -----------------------------------------------------------
missing=()
command -v gcc >/dev/null 2>&1 || missing+=("gcc (apt-get install -y gcc)")
command -v wrk >/dev/null 2>&1 || missing+=("wrk (apt-get install -y wrk)")
command -v curl >/dev/null 2>&1 || missing+=("curl (apt-get install -y curl)")
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $nginx_bin ]] || missing+=("nginx (apt-get install -y nginx)")
fcgiwrap_bin=$(command -v fcgiwrap || echo /usr/sbin/fcgiwrap)
[[ -x $fcgiwrap_bin ]] || missing+=("fcgiwrap (apt-get install -y fcgiwrap)")
if [[ -z ${FCGI_LAUNCH:-} ]] && ! command -v cargo >/dev/null 2>&1; then
    missing+=("cargo (a Rust toolchain), or FCGI_LAUNCH=/path/to/fcgi-launch")
fi
if ((${#missing[@]})); then
    echo "cgi.sh: missing prerequisites:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
fi

# --- the temporary directory and what runs in it -----------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fcgi-launch-cgi-bench.XXXXXX")
pids=()
cleanup() {
    local pid i
    # Each server was started in a process group of its own (setsid), so
    # TERM to the group reaches its workers too; nothing else is touched.
    for pid in "${pids[@]}"; do
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ $KEEP_TMP == 1 ]]; then
        echo "cgi.sh: kept $tmp" >&2
    else
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build -------------------------------------------------------------------
if [[ -n ${FCGI_LAUNCH:-} ]]; then
    launcher=$FCGI_LAUNCH
    [[ -x $launcher ]] || die "FCGI_LAUNCH=$launcher is not executable"
else
    echo "cgi.sh: cargo build --release" >&2
    (cd "$root" && cargo build --release --quiet) || die "cargo build failed"
    launcher="$root/target/release/fcgi-launch"
fi
gcc -O2 -Wall -pthread -o "$tmp/spawn_floor" "$here/spawn_floor.c" ||
    die "cannot build spawn_floor"

# --- a free port -------------------------------------------------------------
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for ((i = 0; i < 20; i++)); do
    port_busy "$PORT" || break
    PORT=$((PORT + 1))
done
port_busy "$PORT" && die "no free port near $PORT (set PORT)"

# --- configuration -----------------------------------------------------------
fl_sock="$tmp/fcgi-launch.sock"
fw_sock="$tmp/fcgiwrap.sock"
mkdir -p "$tmp/nginx"
user_line=""
# As root nginx's workers would become `nobody`, who cannot enter the
# temporary directory: keep them as the invoking user.
if ((EUID == 0)); then
    user_line="user $(id -un) $(id -gn);"
fi
cat >"$tmp/nginx/nginx.conf" <<EOF
$user_line
worker_processes 1;
daemon off;
master_process on;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events {
    worker_connections 1024;
}
http {
    access_log off;
    client_body_temp_path $tmp/nginx/client_body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    server {
        listen 127.0.0.1:$PORT;
        server_name localhost;
        location = /fcgi-launch/tiny.cgi {
            include $tmp/nginx/fastcgi_params;
            fastcgi_pass unix:$fl_sock;
        }
        location = /fcgiwrap/tiny.cgi {
            include $tmp/nginx/fastcgi_params;
            fastcgi_pass unix:$fw_sock;
        }
    }
}
EOF
# nginx's stock fastcgi_params, and the script.
cat >"$tmp/nginx/fastcgi_params" <<EOF
fastcgi_param QUERY_STRING \$query_string;
fastcgi_param REQUEST_METHOD \$request_method;
fastcgi_param CONTENT_TYPE \$content_type;
fastcgi_param CONTENT_LENGTH \$content_length;
fastcgi_param SCRIPT_NAME \$fastcgi_script_name;
fastcgi_param REQUEST_URI \$request_uri;
fastcgi_param DOCUMENT_URI \$document_uri;
fastcgi_param DOCUMENT_ROOT \$document_root;
fastcgi_param SERVER_PROTOCOL \$server_protocol;
fastcgi_param REQUEST_SCHEME \$scheme;
fastcgi_param HTTPS \$https if_not_empty;
fastcgi_param GATEWAY_INTERFACE CGI/1.1;
fastcgi_param SERVER_SOFTWARE nginx/\$nginx_version;
fastcgi_param REMOTE_ADDR \$remote_addr;
fastcgi_param REMOTE_PORT \$remote_port;
fastcgi_param SERVER_ADDR \$server_addr;
fastcgi_param SERVER_PORT \$server_port;
fastcgi_param SERVER_NAME \$server_name;
fastcgi_param REDIRECT_STATUS 200;
fastcgi_param SCRIPT_FILENAME $script;
EOF

# --- start -------------------------------------------------------------------
# Every server in its own session and process group (setsid), so cleanup
# can stop it with its children by the group id, which is its pid.
start() { # NAME CMD...: starts CMD, logs to $tmp/NAME.log
    local name=$1
    shift
    setsid "$@" </dev/null >"$tmp/$name.log" 2>&1 &
    pids+=("$!")
}
wait_for() { # WHAT TEST...: polls TEST for up to 5 s
    local what=$1 i
    shift
    for ((i = 0; i < 50; i++)); do
        "$@" && return 0
        sleep 0.1
    done
    die "$what did not come up; logs in $tmp (KEEP_TMP=1 keeps them)"
}

start fcgi-launch "$launcher" --bind "unix:$fl_sock" --socket-mode 0666 -w "$WORKERS"
start fcgiwrap "$fcgiwrap_bin" -s "unix:$fw_sock" -c "$WORKERS"
wait_for fcgi-launch test -S "$fl_sock"
wait_for fcgiwrap test -S "$fw_sock"
chmod 0666 "$fw_sock"
start nginx "$nginx_bin" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log"
wait_for nginx port_busy "$PORT"

base="http://127.0.0.1:$PORT"
for name in fcgi-launch fcgiwrap; do
    body=$(curl -sS --max-time 5 "$base/$name/tiny.cgi") ||
        die "GET /$name/tiny.cgi failed; logs in $tmp"
    [[ $body == hello ]] || die "GET /$name/tiny.cgi answered ${body@Q}, not hello"
done
"$tmp/spawn_floor" "$script" 1 0.2 >/dev/null || die "spawn_floor does not run"

# --- the runs ----------------------------------------------------------------
# Warn when the machine is busy: the CPUs' busy share over one second.
cpu_busy() { # prints the busy percentage of all CPUs over 1 s
    local a b
    a=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
    sleep 1
    b=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
        busy = y[1] - x[1]; all = busy + y[2] - x[2];
        printf "%.0f\n", (all > 0 ? 100 * busy / all : 0) }'
}
busy=$(cpu_busy)
if ((busy > 10)); then
    echo "cgi.sh: warning: the CPUs were ${busy}% busy before the start; figures will be noisy" >&2
fi

results="$tmp/results" # lines: CONNS WHO RATE ERRORS
: >"$results"

run_wrk() { # NAME CONNS: prints "RATE ERRORS"
    local name=$1 conns=$2 threads=1 out rate non2xx sockerr
    ((conns >= 16)) && threads=2
    out=$(timeout $((RUN_SECONDS + 30)) wrk -t"$threads" -c"$conns" -d"${RUN_SECONDS}s" \
        --timeout 5s "$base/$name/tiny.cgi" 2>&1) || {
        echo "0 -1"
        return
    }
    rate=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")
    sockerr=$(awk '/Socket errors:/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' <<<"$out")
    echo "${rate:-0} $((${non2xx:-0} + ${sockerr:-0}))"
}
run_floor() { # CONNS: prints "RATE ERRORS"
    local out
    out=$(timeout $((RUN_SECONDS + 30)) "$tmp/spawn_floor" "$script" "$1" "$RUN_SECONDS") || {
        echo "0 -1"
        return
    }
    awk '/^RESULT/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
                     print v["rate"], v["errors"] }' <<<"$out"
}

who_all=(fcgi-launch fcgiwrap floor)
echo
echo "fcgi-launch -w $WORKERS, fcgiwrap -c $WORKERS, nginx worker_processes 1," \
    "$ROUNDS rounds of ${RUN_SECONDS}s, script $script, $(nproc) CPUs"
for conns in $CONNS; do
    for ((r = 0; r < ROUNDS; r++)); do
        line="conns $conns round $((r + 1)):"
        for ((k = 0; k < 3; k++)); do
            who=${who_all[$(((r + k) % 3))]}
            if [[ $who == floor ]]; then
                read -r rate errs < <(run_floor "$conns")
            else
                read -r rate errs < <(run_wrk "$who" "$conns")
            fi
            echo "$conns $who $rate $errs" >>"$results"
            line+=$(printf '  %s %.0f/s' "$who" "$rate")
            ((errs == 0)) || line+=" (errors $errs)"
        done
        echo "$line"
    done
done

# --- the table ---------------------------------------------------------------
median() { # CONNS WHO
    awk -v c="$1" -v w="$2" '$1 == c && $2 == w { print $3 }' "$results" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print 0;
             else if (NR % 2) print v[(NR + 1) / 2];
             else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
errors() { # CONNS WHO: total errors, -1 if a run failed outright
    awk -v c="$1" -v w="$2" '$1 == c && $2 == w { if ($4 < 0) bad = 1; s += $4 }
        END { print bad ? -1 : s + 0 }' "$results"
}

echo
echo "Medians of $ROUNDS rounds, requests/s (spawn floor: runs/s)"
printf '%-6s %12s %12s %12s %10s %10s %10s %8s %8s %8s\n' conns fcgi-launch fcgiwrap \
    "spawn floor" "fl/fw" "fl %floor" "fw %floor" "err fl" "err fw" "err flr"
misses=0
verdicts=()
for conns in $CONNS; do
    fl=$(median "$conns" fcgi-launch)
    fw=$(median "$conns" fcgiwrap)
    floor=$(median "$conns" floor)
    efl=$(errors "$conns" fcgi-launch)
    efw=$(errors "$conns" fcgiwrap)
    efloor=$(errors "$conns" floor)
    read -r ratio pfl pfw < <(awk -v a="$fl" -v b="$fw" -v f="$floor" 'BEGIN {
        printf "%.2f %.0f %.0f\n", (b > 0 ? a / b : 0), (f > 0 ? 100 * a / f : 0),
            (f > 0 ? 100 * b / f : 0) }')
    printf '%-6s %12.0f %12.0f %12.0f %9sx %9s%% %9s%% %8s %8s %8s\n' "$conns" "$fl" "$fw" \
        "$floor" "$ratio" "$pfl" "$pfw" "$efl" "$efw" "$efloor"
    need=1.0
    [[ $conns == 1 ]] && need=1.2
    if awk -v r="$ratio" -v n="$need" 'BEGIN { exit !(r >= n) }'; then
        verdicts+=("PASS  $conns conn: fcgi-launch/fcgiwrap ${ratio}x >= ${need}x")
    else
        verdicts+=("MISS  $conns conn: fcgi-launch/fcgiwrap ${ratio}x < ${need}x")
        misses=$((misses + 1))
    fi
    if [[ $efl != 0 || $efw != 0 || $efloor != 0 ]]; then
        verdicts+=("MISS  $conns conn: errors (fcgi-launch $efl, fcgiwrap $efw, floor $efloor; -1: a run failed)")
        misses=$((misses + 1))
    fi
done
echo
printf '%s\n' "${verdicts[@]}"
echo "(err: non-2xx responses + socket errors from wrk, failed runs of the floor; all must be 0)"
if [[ $STRICT == 1 && $misses -gt 0 ]]; then
    exit 1
fi
