#!/usr/bin/env bash
# Benchmark: what fcgi-launch adds to a request in plain CGI mode.
#
# A web server's CGI module (Apache's mod_cgi, lighttpd's mod_cgi, thttpd)
# can run fcgi-launch instead of the script: it then runs the script with
# the same handler as in FastCGI mode, once, on its own stdin and stdout.
# This measures the price of that: cgi_latency.c runs fixtures/tiny.cgi
# RUNS times directly and RUNS times as
#   GATEWAY_INTERFACE=CGI/1.1 ... SCRIPT_FILENAME=/abs/tiny.cgi fcgi-launch
# interleaved, each with the environment mod_cgi gives a script, and times
# each run from posix_spawn to waitpid with the response read in between.
# It prints the medians and their difference, the added latency.
#
# Target: added latency under 1 ms (median).
#
# Needs gcc and cargo. Run from anywhere:
#   bash tests/bench/cgi_latency.sh
# Takes a few seconds after the build.
#
# Settings (environment):
#   RUNS=N           runs of each (default 500)
#   FCGI_LAUNCH=PATH use this fcgi-launch binary instead of building one
#   STRICT=1         exit 1 when the target is missed
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
script="$here/fixtures/tiny.cgi"

RUNS=${RUNS:-500}
STRICT=${STRICT:-0}

die() { echo "cgi_latency.sh: $*" >&2; exit 1; }

[[ $RUNS =~ ^[1-9][0-9]*$ && $RUNS -le 100000 ]] || die "RUNS must be 1..100000"
[[ -x $script ]] || die "$script is missing or not executable"
command -v gcc >/dev/null 2>&1 || die "needs gcc (apt-get install -y gcc)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fcgi-launch-cgi-latency.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

if [[ -n ${FCGI_LAUNCH:-} ]]; then
    launcher=$FCGI_LAUNCH
    [[ -x $launcher ]] || die "FCGI_LAUNCH=$launcher is not executable"
else
    command -v cargo >/dev/null 2>&1 ||
        die "needs cargo (a Rust toolchain), or FCGI_LAUNCH=/path/to/fcgi-launch"
    echo "cgi_latency.sh: cargo build --release" >&2
    (cd "$root" && cargo build --release --quiet) || die "cargo build failed"
    launcher="$root/target/release/fcgi-launch"
fi
gcc -O2 -Wall -o "$tmp/cgi_latency" "$here/cgi_latency.c" ||
    die "cannot build cgi_latency"

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
    echo "cgi_latency.sh: warning: the CPUs were ${busy}% busy before the start; figures will be noisy" >&2
fi

out=$("$tmp/cgi_latency" "$RUNS" "$script" "$launcher") || {
    printf '%s\n' "$out"
    die "a run failed"
}
printf '%s\n' "$out"
added=$(awk '/^RESULT/ { for (i = 2; i <= NF; i++) { split($i, kv, "=");
    if (kv[1] == "added_ms") print kv[2] } }' <<<"$out")
[[ -n $added ]] || die "no result line"
if awk -v a="$added" 'BEGIN { exit !(a < 1.0) }'; then
    echo "PASS  added latency ${added} ms < 1 ms"
else
    echo "MISS  added latency ${added} ms >= 1 ms"
    [[ $STRICT == 1 ]] && exit 1
fi
exit 0
