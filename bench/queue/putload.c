/*
 * putload: the durable-put producers of the queue side-by-side, as one C epoll loop.
 *
 * Why not the Python producers? They spend about 15 us of CPU per put (uvloop, a
 * coroutine and a future per reply), so 64 of them answering a group commit's 64
 * INSERTED replies take about a millisecond to send the next 64 puts: the producer
 * tool, not the server, then shapes the batches and, past ~60,000 puts/s, caps the
 * rate. This tool does the same thing at syscall cost: CONNS connections, each with
 * DEPTH puts of BODY_BYTES 'x' bytes in flight (DEPTH=1: the classic producer that
 * waits for INSERTED before its next put), for SECONDS, then prints one line:
 *   puts=<n> seconds=<s> puts_per_s=<r> errors=<e>
 * Every reply line is counted: "INSERTED <id>" is a put done, anything else (BURIED,
 * DRAINING, OUT_OF_MEMORY, JOB_TOO_BIG, ...) an error; a connection that closes is
 * an error and the run goes on without it.
 *
 * Only loopback targets make sense here; it is a benchmark tool, not a client.
 * Build: cc -O2 -o putload putload.c
 * Usage: putload HOST PORT CONNS SECONDS [DEPTH] [BODY_BYTES]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 4096
#define MAX_DEPTH 256
#define RBUF 65536

typedef struct {
    int fd;
    int outstanding; /* puts sent, reply not yet read */
    size_t rlen;
    char rbuf[RBUF];
} conn_t;

static char *put_cmd;
static size_t put_len;
static long puts_done, errors, in_flight;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int send_all(int fd, const char *buf, size_t len) {
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Send n puts in one write (DEPTH of them at the start, one per reply after). */
static int send_puts(conn_t *c, int n) {
    static char batch[MAX_DEPTH * 1100];
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        memcpy(batch + len, put_cmd, put_len);
        len += put_len;
    }
    c->outstanding += n;
    in_flight += n;
    return send_all(c->fd, batch, len);
}

static void drop(int ep, conn_t *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    in_flight -= c->outstanding; /* whatever it had in flight is gone */
    c->outstanding = 0;
    errors++;
}

/* Count the complete reply lines in the buffer; returns how many puts to send next. */
static int consume(conn_t *c) {
    int replies = 0;
    char *start = c->rbuf, *end = c->rbuf + c->rlen, *nl;
    while ((nl = memchr(start, '\n', (size_t)(end - start))) != NULL) {
        if (nl - start >= 9 && memcmp(start, "INSERTED ", 9) == 0)
            puts_done++;
        else
            errors++;
        replies++;
        start = nl + 1;
    }
    c->rlen = (size_t)(end - start);
    memmove(c->rbuf, start, c->rlen);
    return replies;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s HOST PORT CONNS SECONDS [DEPTH] [BODY_BYTES]\n", argv[0]);
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    int nconns = atoi(argv[3]);
    double seconds = atof(argv[4]);
    int depth = argc > 5 ? atoi(argv[5]) : 1;
    int body_bytes = argc > 6 ? atoi(argv[6]) : 64;
    if (nconns < 1 || nconns > MAX_CONNS || depth < 1 || depth > MAX_DEPTH ||
        body_bytes < 0 || body_bytes > 1024 || seconds <= 0) {
        fprintf(stderr, "CONNS 1..%d, DEPTH 1..%d, BODY_BYTES 0..1024, SECONDS > 0\n",
                MAX_CONNS, MAX_DEPTH);
        return 2;
    }
    put_cmd = malloc(64 + (size_t)body_bytes);
    put_len = (size_t)sprintf(put_cmd, "put 1024 0 60 %d\r\n", body_bytes);
    memset(put_cmd + put_len, 'x', (size_t)body_bytes);
    put_len += (size_t)body_bytes;
    memcpy(put_cmd + put_len, "\r\n", 2);
    put_len += 2;

    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "bad host %s\n", host);
        return 2;
    }
    int ep = epoll_create1(0);
    conn_t *conns = calloc((size_t)nconns, sizeof(conn_t));
    for (int i = 0; i < nconns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
            perror("connect");
            return 1;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    double started = now_s(), deadline = started + seconds;
    for (int i = 0; i < nconns; i++)
        if (send_puts(&conns[i], depth) < 0) drop(ep, &conns[i]);
    struct epoll_event events[256];
    int stopping = 0;
    while (in_flight > 0) {
        int n = epoll_wait(ep, events, 256, 1000);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 1;
        }
        if (!stopping && now_s() >= deadline) stopping = 1;  /* let in-flight puts land */
        for (int i = 0; i < n; i++) {
            conn_t *c = events[i].data.ptr;
            if (c->fd < 0) continue;
            ssize_t got = recv(c->fd, c->rbuf + c->rlen, RBUF - c->rlen, 0);
            if (got <= 0) {
                if (got < 0 && errno == EINTR) continue;
                drop(ep, c);
                continue;
            }
            c->rlen += (size_t)got;
            int replies = consume(c);
            c->outstanding -= replies;
            in_flight -= replies;
            if (!stopping && replies && send_puts(c, replies) < 0) drop(ep, c);
        }
        if (n == 0 && stopping) break;  /* a server that stopped answering */
    }
    double elapsed = now_s() - started;
    printf("puts=%ld seconds=%.3f puts_per_s=%.1f errors=%ld\n", puts_done, elapsed,
           puts_done / elapsed, errors);
    return 0;
}
