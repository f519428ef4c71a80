/*
 * limit: "the physical limit" for the hello benchmark.
 *
 * usage: limit SOCKET_PATH [BACKLOG]
 *
 * A unix-socket server with one thread per connection (threads are reused
 * across connections, see worker()) that does the least a FastCGI server
 * can do: per request, one read() (the load generator sends
 * each request in a single write and waits for the reply, so one read gets
 * all of it) and one write() of a precomputed reply: the FCGI_STDOUT record
 * with the hello CGI bytes, the empty FCGI_STDOUT record and
 * FCGI_END_REQUEST (appStatus 0, FCGI_REQUEST_COMPLETE), all for request id
 * 1, which is what the load generator uses. It does not parse the request
 * beyond reading the FCGI_KEEP_CONN flag: without it, the connection is
 * closed after the reply, as a real server does; with it, the thread waits
 * for the next request until the client closes.
 *
 * Build: gcc -O2 -o limit limit.c -lpthread
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define HELLO \
    "Content-Type: text/plain\r\n" \
    "Content-Length: 14\r\n" \
    "\r\n" \
    "Hello, world!\n"
#define HELLO_LEN (sizeof HELLO - 1)

/* Built once in main: 8 + HELLO_LEN + 8 + 16 bytes. */
static unsigned char reply[8 + HELLO_LEN + 8 + 16];

static void header(unsigned char *h, int type, size_t len)
{
    h[0] = 1;                  /* FCGI_VERSION_1 */
    h[1] = (unsigned char)type;
    h[2] = 0;                  /* request id 1 */
    h[3] = 1;
    h[4] = (unsigned char)(len >> 8);
    h[5] = (unsigned char)len;
    h[6] = 0;                  /* no padding */
    h[7] = 0;
}

static void build_reply(void)
{
    unsigned char *p = reply;

    header(p, 6, HELLO_LEN);   /* FCGI_STDOUT */
    memcpy(p + 8, HELLO, HELLO_LEN);
    p += 8 + HELLO_LEN;
    header(p, 6, 0);           /* end of FCGI_STDOUT */
    p += 8;
    header(p, 3, 8);           /* FCGI_END_REQUEST */
    memset(p + 8, 0, 8);       /* appStatus 0, FCGI_REQUEST_COMPLETE */
}

/* Serves one connection until the client closes it (keep-conn) or after
 * its one request (no FCGI_KEEP_CONN). */
static void serve(int fd)
{
    unsigned char buf[65536];

    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (write(fd, reply, sizeof reply) != (ssize_t)sizeof reply)
            break;
        /* BEGIN_REQUEST comes first: header byte 1 is the type, body
         * byte 2 (offset 10) the flags. No FCGI_KEEP_CONN: we close. */
        if (n >= 16 && buf[1] == 1 && (buf[10] & 1) == 0)
            break;
    }
    close(fd);
}

static int lfd;
static pthread_attr_t attr;
static atomic_int idle;        /* threads currently waiting in accept() */

static void *worker(void *unused);

static void spawn_worker(void)
{
    pthread_t tid;

    if (pthread_create(&tid, &attr, worker, NULL) != 0)
        fprintf(stderr, "limit: pthread_create failed\n");
}

/* A connection gets a thread of its own for as long as it is open. Threads
 * are kept for the next connection instead of being created and destroyed
 * for each: whenever the last idle thread takes a connection, it starts
 * another, so there is always one waiting in accept(). */
static void *worker(void *unused)
{
    (void)unused;
    for (;;) {
        int fd;

        atomic_fetch_add(&idle, 1);
        fd = accept(lfd, NULL, NULL);
        if (atomic_fetch_sub(&idle, 1) == 1)
            spawn_worker();
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                usleep(1000); /* out of fds: let connections finish */
            continue;
        }
        serve(fd);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    struct sockaddr_un addr;
    int backlog = 1024, i;

    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s SOCKET_PATH [BACKLOG]\n", argv[0]);
        return 2;
    }
    if (argc == 3)
        backlog = atoi(argv[2]);
    if (strlen(argv[1]) >= sizeof addr.sun_path) {
        fprintf(stderr, "limit: socket path too long\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    build_reply();

    lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (lfd < 0) {
        perror("limit: socket");
        return 1;
    }
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, argv[1]);
    unlink(argv[1]);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 ||
        listen(lfd, backlog) < 0) {
        perror("limit: bind/listen");
        return 1;
    }

    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (i = 0; i < 4; i++)
        spawn_worker();
    for (;;)
        pause();
}
