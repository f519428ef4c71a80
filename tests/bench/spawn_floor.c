/*
 * spawn_floor: the least any CGI launcher can do per request.
 *
 * CONNS threads each loop for SECONDS: posix_spawn the script with its
 * stdout on a pipe (stdin /dev/null, stderr inherited), read the pipe to
 * end of file, waitpid. No sockets, no FastCGI, no web server. The
 * completed runs per second are the ceiling of the requests/s of a
 * launcher running the same script, at the same concurrency, on the same
 * machine.
 *
 * The script gets a CGI environment like the one a launcher builds from
 * nginx's stock fastcgi_params, so its start-up costs the same.
 *
 * Build: gcc -O2 -pthread -o spawn_floor spawn_floor.c
 * Usage: spawn_floor SCRIPT CONNS SECONDS
 * Prints one human line and one line for scripts:
 *   RESULT rate=1234.5 runs=3704 seconds=3.001 errors=0
 * A run is an error if the script cannot be spawned, exits non-zero or
 * writes nothing; errors are not counted in rate.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *script;
static double deadline;
static int devnull;
static char *envp[32];

struct tally {
    pthread_t thread;
    long runs;
    long errors;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One run: 1 when the script wrote something and exited 0. */
static int run_once(void)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return 0;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, devnull, 0);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    char *argv[] = {(char *)script, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, script, &fa, NULL, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        return 0;
    }
    char buf[4096];
    long got = 0;
    for (;;) {
        ssize_t n = read(fds[0], buf, sizeof buf);
        if (n > 0) {
            got += n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        break;
    }
    close(fds[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return 0;
    return got > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static void *loop(void *arg)
{
    struct tally *t = arg;
    while (now() < deadline) {
        if (run_once())
            t->runs++;
        else
            t->errors++;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: spawn_floor SCRIPT CONNS SECONDS\n");
        return 2;
    }
    script = argv[1];
    int conns = atoi(argv[2]);
    double seconds = atof(argv[3]);
    if (conns < 1 || conns > 1000 || !(seconds > 0 && seconds <= 3600)) {
        fprintf(stderr, "spawn_floor: CONNS must be 1..1000, SECONDS 0..3600\n");
        return 2;
    }
    if (access(script, X_OK) != 0) {
        fprintf(stderr, "spawn_floor: %s: %s\n", script, strerror(errno));
        return 2;
    }
    devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull < 0) {
        perror("spawn_floor: /dev/null");
        return 2;
    }

    static char filename[4096];
    snprintf(filename, sizeof filename, "SCRIPT_FILENAME=%s", script);
    char *env[] = {
        "GATEWAY_INTERFACE=CGI/1.1",
        "SERVER_SOFTWARE=nginx",
        "SERVER_PROTOCOL=HTTP/1.1",
        "REQUEST_METHOD=GET",
        "REQUEST_SCHEME=http",
        "REQUEST_URI=/tiny.cgi",
        "DOCUMENT_URI=/tiny.cgi",
        "DOCUMENT_ROOT=/",
        "SCRIPT_NAME=/tiny.cgi",
        filename,
        "QUERY_STRING=",
        "CONTENT_TYPE=",
        "CONTENT_LENGTH=",
        "REMOTE_ADDR=127.0.0.1",
        "REMOTE_PORT=40000",
        "SERVER_ADDR=127.0.0.1",
        "SERVER_PORT=8080",
        "SERVER_NAME=localhost",
        "HTTP_HOST=127.0.0.1:8080",
        "PATH=/usr/local/bin:/usr/bin:/bin",
        NULL,
    };
    memcpy(envp, env, sizeof env);

    struct tally *t = calloc(conns, sizeof *t);
    if (!t) {
        perror("spawn_floor");
        return 1;
    }
    double start = now();
    deadline = start + seconds;
    int started = 0;
    for (; started < conns; started++)
        if (pthread_create(&t[started].thread, NULL, loop, &t[started]) != 0) {
            fprintf(stderr, "spawn_floor: cannot start thread %d\n", started);
            deadline = 0;
            break;
        }
    long runs = 0, errors = 0;
    for (int i = 0; i < started; i++) {
        pthread_join(t[i].thread, NULL);
        runs += t[i].runs;
        errors += t[i].errors;
    }
    double elapsed = now() - start;
    if (started < conns)
        return 1;
    double rate = runs / elapsed;
    printf("spawn_floor: %d thread(s), %.3f s: %ld runs, %.1f runs/s, %ld errors\n",
           conns, elapsed, runs, rate, errors);
    printf("RESULT rate=%.1f runs=%ld seconds=%.3f errors=%ld\n", rate, runs,
           elapsed, errors);
    return 0;
}
