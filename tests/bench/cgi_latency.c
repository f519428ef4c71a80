/*
 * cgi_latency: what a launcher in plain CGI mode adds to each request.
 *
 * Runs a CGI script directly and through each LAUNCHER (a program path,
 * started as a web server's CGI module would start the script itself),
 * RUNS rounds of one run each, interleaved: the order of the runs within
 * a round rotates from round to round. Each run is timed from just
 * before posix_spawn to the return of waitpid, the response read to end
 * of file in between; that is the part of a request a CGI module waits
 * for.
 *
 * All get the environment Apache's mod_cgi gives a script for a
 * `GET /NAME` (NAME the script's file name, the document root its
 * directory), stdin an empty pipe already closed by the writer, stdout a
 * pipe, stderr inherited. A run counts only if it exits 0 and its
 * output contains "hello" (the fixture's body); any other run is an
 * error and the program exits 1 after printing.
 *
 * Build: gcc -O2 -o cgi_latency cgi_latency.c
 * Usage: cgi_latency RUNS SCRIPT LAUNCHER [LAUNCHER...]
 * Prints medians, then a line per launcher for scripts, times in ms:
 *   RESULT launcher=/path direct_ms=0.812 launcher_ms=1.301 added_ms=0.489 paired_ms=0.480 errors=0
 * added_ms is the difference of the two medians, paired_ms the median of
 * the per-round differences.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WARMUP 20
#define MAX_RUNS 100000
#define MAX_LAUNCHERS 4

static char *envp[40];

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One run of argv; its wall time in seconds, or -1 on failure. */
static double run_once(char **argv)
{
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0)
        return -1;
    if (pipe2(out, O_CLOEXEC) != 0) {
        close(in[0]);
        close(in[1]);
        return -1;
    }
    close(in[1]); /* a GET: no body, stdin ends at once */
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    pid_t pid;
    double t0 = now();
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    if (rc != 0) {
        close(out[0]);
        fprintf(stderr, "cgi_latency: %s: %s\n", argv[0], strerror(rc));
        return -1;
    }
    char buf[8192];
    size_t got = 0;
    for (;;) {
        ssize_t n = read(out[0], buf + got, sizeof buf - 1 - got);
        if (n > 0) {
            got += n;
            if (got == sizeof buf - 1)
                got = 0; /* longer than any fixture: keep the tail */
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        break;
    }
    close(out[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    double t = now() - t0;
    buf[got] = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
        !strstr(buf, "hello")) {
        fprintf(stderr, "cgi_latency: %s: bad run (status %d): %.200s\n",
                argv[0], status, buf);
        return -1;
    }
    return t;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-quantile of sorted v[0..n). */
static double quantile(const double *v, int n, double q)
{
    double pos = q * (n - 1);
    int i = (int)pos;
    if (i + 1 >= n)
        return v[n - 1];
    return v[i] + (pos - i) * (v[i + 1] - v[i]);
}

static void report(const char *name, double *v, int n)
{
    qsort(v, n, sizeof *v, cmp);
    printf("  %s\n      median %7.3f ms   p10 %7.3f   p90 %7.3f   min %7.3f\n",
           name, quantile(v, n, 0.5) * 1e3, quantile(v, n, 0.1) * 1e3,
           quantile(v, n, 0.9) * 1e3, v[0] * 1e3);
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc - 3 > MAX_LAUNCHERS) {
        fprintf(stderr, "usage: cgi_latency RUNS SCRIPT LAUNCHER [LAUNCHER...] "
                        "(at most %d)\n", MAX_LAUNCHERS);
        return 2;
    }
    int runs = atoi(argv[1]);
    char *script = argv[2];
    if (runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr, "cgi_latency: RUNS must be 1..%d\n", MAX_RUNS);
        return 2;
    }
    if (script[0] != '/' || access(script, X_OK) != 0) {
        fprintf(stderr, "cgi_latency: %s: not an absolute path to an executable\n",
                script);
        return 2;
    }

    /* What Apache 2.4's mod_cgi sets for GET /NAME on a default vhost. */
    static char filename[4096], name[1024], uri[1024], root[4096], ctxroot[4096];
    char copy1[4096], copy2[4096];
    snprintf(copy1, sizeof copy1, "%s", script);
    snprintf(copy2, sizeof copy2, "%s", script);
    const char *base = basename(copy1);
    const char *dir = dirname(copy2);
    snprintf(filename, sizeof filename, "SCRIPT_FILENAME=%s", script);
    snprintf(name, sizeof name, "SCRIPT_NAME=/%s", base);
    snprintf(uri, sizeof uri, "REQUEST_URI=/%s", base);
    snprintf(root, sizeof root, "DOCUMENT_ROOT=%s", dir);
    snprintf(ctxroot, sizeof ctxroot, "CONTEXT_DOCUMENT_ROOT=%s", dir);
    char *env[] = {
        "HTTP_HOST=localhost",
        "HTTP_USER_AGENT=curl/7.88.1",
        "HTTP_ACCEPT=*/*",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "SERVER_SIGNATURE=<address>Apache/2.4.62 (Debian) Server at localhost Port 80</address>\n",
        "SERVER_SOFTWARE=Apache/2.4.62 (Debian)",
        "SERVER_NAME=localhost",
        "SERVER_ADDR=127.0.0.1",
        "SERVER_PORT=80",
        "REMOTE_ADDR=127.0.0.1",
        root,
        "REQUEST_SCHEME=http",
        "CONTEXT_PREFIX=",
        ctxroot,
        "SERVER_ADMIN=webmaster@localhost",
        filename,
        "REMOTE_PORT=52000",
        "GATEWAY_INTERFACE=CGI/1.1",
        "SERVER_PROTOCOL=HTTP/1.1",
        "REQUEST_METHOD=GET",
        "QUERY_STRING=",
        uri,
        name,
        NULL,
    };
    memcpy(envp, env, sizeof env);

    /* argv of each contender: 0 is the script itself, then the launchers. */
    int n = argc - 2;
    char *cmd[1 + MAX_LAUNCHERS][2];
    double *t[1 + MAX_LAUNCHERS], *d[1 + MAX_LAUNCHERS];
    for (int k = 0; k < n; k++) {
        cmd[k][0] = k == 0 ? script : argv[2 + k];
        cmd[k][1] = NULL;
        t[k] = calloc(runs, sizeof *t[k]);
        d[k] = calloc(runs, sizeof *d[k]);
        if (!t[k] || !d[k]) {
            perror("cgi_latency");
            return 1;
        }
    }
    int errors = 0;
    for (int i = 0; i < WARMUP; i++)
        for (int k = 0; k < n; k++)
            if (run_once(cmd[k]) < 0)
                errors++;
    if (errors) {
        fprintf(stderr, "cgi_latency: the warm-up runs failed\n");
        return 1;
    }
    for (int i = 0; i < runs; i++) {
        double x[1 + MAX_LAUNCHERS];
        int failed = 0;
        for (int j = 0; j < n; j++) {
            int k = (i + j) % n;
            x[k] = run_once(cmd[k]);
            if (x[k] < 0)
                failed = 1;
        }
        if (failed) {
            errors++;
            if (errors > 10)
                break;
            i--;
            continue;
        }
        for (int k = 0; k < n; k++) {
            t[k][i] = x[k];
            d[k][i] = x[k] - x[0];
        }
    }
    if (errors > 10) {
        fprintf(stderr, "cgi_latency: too many failed runs\n");
        return 1;
    }
    printf("cgi_latency: %d rounds, each one run of the script directly and "
           "one through each launcher, interleaved\n", runs);
    report("direct", t[0], runs);
    double direct = quantile(t[0], runs, 0.5);
    for (int k = 1; k < n; k++) {
        report(cmd[k][0], t[k], runs);
        qsort(d[k], runs, sizeof *d[k], cmp);
        double m = quantile(t[k], runs, 0.5), md = quantile(d[k], runs, 0.5);
        printf("    added %.3f ms (difference of the medians); median of the "
               "per-round differences %.3f ms\n", (m - direct) * 1e3, md * 1e3);
    }
    for (int k = 1; k < n; k++) {
        double m = quantile(t[k], runs, 0.5), md = quantile(d[k], runs, 0.5);
        printf("RESULT launcher=%s direct_ms=%.3f launcher_ms=%.3f added_ms=%.3f "
               "paired_ms=%.3f errors=%d\n", cmd[k][0], direct * 1e3, m * 1e3,
               (m - direct) * 1e3, md * 1e3, errors);
    }
    return errors ? 1 : 0;
}
