#!/usr/bin/env bash
# Benchmark: what fcgi-launch adds to a request in plain CGI mode.
#
# A web server's CGI module (Apache's mod_cgi, lighttpd's mod_cgi, thttpd)
# can run fcgi-launch instead of the script: it then runs the script with
# the same handler as in FastCGI mode, once, on its own stdin and stdout.
# This measures the price of that: cgi_latency.c runs fixtures/tiny.cgi
# directly and as
#   GATEWAY_INTERFACE=CGI/1.1 ... SCRIPT_FILENAME=/abs/tiny.cgi fcgi-launch
# through each build of fcgi-launch, RUNS rounds of one run each, the order
# rotating, each with the environment mod_cgi gives a script, and times
# each run from posix_spawn to waitpid with the response read in between.
# It prints the medians and their differences, the added latency.
#
# Two builds are measured side by side: the usual one (`cargo build
# --release`, linked to the system's glibc) and the static one that
# packaging/README.md describes for shared hosts, which is where plain CGI
# is used. A process start in CGI mode pays the dynamic loader on every
# request, which the static build does not.
#
# Target: added latency under 1 ms (median), for the static build; the
# dynamic build's figure is printed beside it.
#
# Needs gcc, cargo and libc6-dev (libc.a, for the static build; without
# it only the dynamic build is measured). Run from anywhere:
#   bash tests/bench/cgi_latency.sh
# Takes a few seconds after the builds.
#
# Settings (environment):
#   RUNS=N           rounds (default 500)
#   FCGI_LAUNCH=PATH measure this fcgi-launch binary only, build nothing
#   STRICT=1         exit 1 when the target is missed
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
script="$here/fixtures/tiny.cgi"

RUNS=${RUNS:-500}
STRICT=${STRICT:-0}

die() { echo "cgi_latency.sh: $*" >&2; exit 1; }

[[ $RUNS =~ ^[1-9][0-9]*$ && $RUNS -le 100000 ]] || die "RUNS must be 1..100000"
FCGI_LAUNCH=${FCGI_LAUNCH:-}
[[ -x $script ]] || die "$script is missing or not executable"
command -v gcc >/dev/null 2>&1 || die "needs gcc (apt-get install -y gcc)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fcgi-launch-cgi-latency.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

host=$(rustc -vV 2>/dev/null | sed -n 's/^host: //p') || true
launchers=()
if [[ -n ${FCGI_LAUNCH:-} ]]; then
    [[ -x $FCGI_LAUNCH ]] || die "FCGI_LAUNCH=$FCGI_LAUNCH is not executable"
    launchers=("$FCGI_LAUNCH")
    static=
else
    command -v cargo >/dev/null 2>&1 ||
        die "needs cargo (a Rust toolchain), or FCGI_LAUNCH=/path/to/fcgi-launch"
    echo "cgi_latency.sh: cargo build --release" >&2
    (cd "$root" && cargo build --release --quiet) || die "cargo build failed"
    # The static build goes to its own directory, so it never replaces
    # the usual binary; --target keeps RUSTFLAGS off build scripts.
    static="$tmp/static/$host/release/fcgi-launch"
    echo "cgi_latency.sh: the static build (crt-static, target $host)" >&2
    if [[ -n $host ]] && (cd "$root" &&
        RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR="$tmp/static" \
            cargo build --release --quiet --target "$host"); then
        launchers=("$static" "$root/target/release/fcgi-launch")
    else
        echo "cgi_latency.sh: warning: the static build failed (is libc6-dev installed?); measuring the dynamic build only" >&2
        static=
        launchers=("$root/target/release/fcgi-launch")
    fi
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

out=$("$tmp/cgi_latency" "$RUNS" "$script" "${launchers[@]}") || {
    printf '%s\n' "$out"
    die "a run failed"
}
printf '%s\n' "$out"
missed=0
for l in "${launchers[@]}"; do
    added=$(awk -v l="$l" '/^RESULT/ && $2 == "launcher=" l {
        for (i = 3; i <= NF; i++) { split($i, kv, "=");
            if (kv[1] == "added_ms") print kv[2] } }' <<<"$out")
    [[ -n $added ]] || die "no result line for $l"
    if [[ -z $FCGI_LAUNCH && $l != "$static" ]]; then
        echo "info  added latency ${added} ms, dynamic build (the target is for the static build)"
    elif awk -v a="$added" 'BEGIN { exit !(a < 1.0) }'; then
        echo "PASS  added latency ${added} ms < 1 ms${static:+, static build}"
    else
        echo "MISS  added latency ${added} ms >= 1 ms${static:+, static build}"
        missed=1
    fi
done
[[ $STRICT == 1 && $missed == 1 ]] && exit 1
exit 0
