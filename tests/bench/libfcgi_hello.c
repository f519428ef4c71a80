/*
 * libfcgi_hello: the reference point for fcgi-launch's `hello` handler,
 * written on threaded libfcgi.
 *
 * usage: libfcgi_hello SOCKET_PATH THREADS [BACKLOG]
 *
 * Opens SOCKET_PATH with FCGX_OpenSocket and runs THREADS threads, each with
 * its own FCGX_Request and its own FCGX_Accept_r loop on that socket. Every
 * request is answered with the same CGI bytes as fcgi-launch's `hello`
 * handler. libfcgi honours FCGI_KEEP_CONN by itself: a thread that accepted
 * a kept connection reads its next request from that same connection.
 *
 * No mutex is held around FCGX_Accept_r: Linux's accept() is safe to call
 * from several threads at once, and holding a lock across FCGX_Accept_r
 * would also block every other thread while one waits for the next request
 * on a kept connection.
 *
 * Build: gcc -O2 -o libfcgi_hello libfcgi_hello.c -lfcgi -lpthread
 */
#include <fcgiapp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char reply[] =
    "Content-Type: text/plain\r\n"
    "Content-Length: 14\r\n"
    "\r\n"
    "Hello, world!\n";

static int listen_fd;

static void *serve(void *unused)
{
    FCGX_Request req;

    (void)unused;
    if (FCGX_InitRequest(&req, listen_fd, 0) != 0) {
        fprintf(stderr, "libfcgi_hello: FCGX_InitRequest failed\n");
        exit(1);
    }
    for (;;) {
        if (FCGX_Accept_r(&req) < 0)
            break;
        FCGX_PutStr(reply, (int)(sizeof reply - 1), req.out);
        FCGX_Finish_r(&req);
    }
    fprintf(stderr, "libfcgi_hello: FCGX_Accept_r failed, thread exits\n");
    return NULL;
}

int main(int argc, char **argv)
{
    int threads, backlog = 1024, i;
    pthread_t *tids;

    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s SOCKET_PATH THREADS [BACKLOG]\n", argv[0]);
        return 2;
    }
    threads = atoi(argv[2]);
    if (argc == 4)
        backlog = atoi(argv[3]);
    if (threads < 1 || threads > 1024 || backlog < 1) {
        fprintf(stderr, "libfcgi_hello: bad THREADS or BACKLOG\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    if (FCGX_Init() != 0) {
        fprintf(stderr, "libfcgi_hello: FCGX_Init failed\n");
        return 1;
    }
    /* FCGX_Init catches SIGTERM to request a graceful shutdown, but a
     * thread blocked in FCGX_Accept_r does not notice it until another
     * request comes, so a plain `kill` would leave the server running.
     * Restore the default action: the benchmark stops servers by SIGTERM. */
    signal(SIGTERM, SIG_DFL);
    unlink(argv[1]);
    listen_fd = FCGX_OpenSocket(argv[1], backlog);
    if (listen_fd < 0) {
        fprintf(stderr, "libfcgi_hello: cannot listen on %s\n", argv[1]);
        return 1;
    }

    tids = calloc((size_t)threads, sizeof *tids);
    if (tids == NULL)
        return 1;
    for (i = 0; i < threads; i++) {
        if (pthread_create(&tids[i], NULL, serve, NULL) != 0) {
            fprintf(stderr, "libfcgi_hello: pthread_create failed\n");
            return 1;
        }
    }
    for (i = 0; i < threads; i++)
        pthread_join(tids[i], NULL);
    return 1;
}
