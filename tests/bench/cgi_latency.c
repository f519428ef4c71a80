/*
 * cgi_latency: what a launcher in plain CGI mode adds to each request.
 *
 * Runs a CGI script RUNS times directly and RUNS times through a launcher
 * (LAUNCHER [ARGS...], started as a web server's CGI module would start
 * the script itself), interleaved: direct then launcher on even rounds,
 * the other way round on odd ones. Each run is timed from just before
 * posix_spawn to the return of waitpid, the response read to end of file
 * in between; that is the part of a request a CGI module waits for.
 *
 * Both get the environment Apache's mod_cgi gives a script for a
 * `GET /NAME` (NAME the script's file name, the document root its
 * directory), stdin an empty pipe already closed by the writer, stdout a
 * pipe, stderr inherited. A run counts only if it exits 0 and its
 * output contains "hello" (the fixture's body); any other run is an
 * error and the program exits 1 after printing.
 *
 * Build: gcc -O2 -o cgi_latency cgi_latency.c
 * Usage: cgi_latency RUNS SCRIPT LAUNCHER [ARGS...]
 * Prints medians and a line for scripts, times in ms:
 *   RESULT direct_ms=0.812 launcher_ms=1.301 added_ms=0.489 paired_ms=0.480 errors=0
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
    printf("  %-9s median %7.3f ms   p10 %7.3f   p90 %7.3f   min %7.3f\n",
           name, quantile(v, n, 0.5) * 1e3, quantile(v, n, 0.1) * 1e3,
           quantile(v, n, 0.9) * 1e3, v[0] * 1e3);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: cgi_latency RUNS SCRIPT LAUNCHER [ARGS...]\n");
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

    char *direct[] = {script, NULL};
    char **launcher = argv + 3;
    double *a = calloc(runs, sizeof *a);
    double *b = calloc(runs, sizeof *b);
    double *d = calloc(runs, sizeof *d);
    if (!a || !b || !d) {
        perror("cgi_latency");
        return 1;
    }
    int errors = 0;
    for (int i = 0; i < WARMUP; i++)
        if (run_once(direct) < 0 || run_once(launcher) < 0)
            errors++;
    if (errors) {
        fprintf(stderr, "cgi_latency: the warm-up runs failed\n");
        return 1;
    }
    for (int i = 0; i < runs; i++) {
        double x, y;
        if (i % 2 == 0) {
            x = run_once(direct);
            y = run_once(launcher);
        } else {
            y = run_once(launcher);
            x = run_once(direct);
        }
        if (x < 0 || y < 0) {
            errors++;
            if (errors > 10)
                break;
            i--;
            continue;
        }
        a[i] = x;
        b[i] = y;
        d[i] = y - x;
    }
    if (errors > 10) {
        fprintf(stderr, "cgi_latency: too many failed runs\n");
        return 1;
    }
    printf("cgi_latency: %d runs each, interleaved\n", runs);
    report("direct", a, runs);
    report("launcher", b, runs);
    qsort(d, runs, sizeof *d, cmp);
    double ma = quantile(a, runs, 0.5), mb = quantile(b, runs, 0.5);
    double md = quantile(d, runs, 0.5);
    printf("  added     %7.3f ms (difference of the medians); "
           "median of the per-round differences %.3f ms\n",
           (mb - ma) * 1e3, md * 1e3);
    printf("RESULT direct_ms=%.3f launcher_ms=%.3f added_ms=%.3f paired_ms=%.3f errors=%d\n",
           ma * 1e3, mb * 1e3, (mb - ma) * 1e3, md * 1e3, errors);
    return errors ? 1 : 0;
}
