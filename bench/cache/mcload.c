/*
 * mcload: a small memcached text-protocol load generator for the side-by-side bench.
 *
 * Why not memcaslap? With one thread it tops out near the rate memcached -t 1 serves, so
 * it measures itself; and it cannot pipeline a fixed depth per connection. This tool is
 * one epoll loop: CONNS connections, each with DEPTH requests in flight (DEPTH=1 is the
 * classic request/response client), a SET_RATIO share of "set" (the rest "get"), keys of
 * exactly 16 bytes drawn uniformly from KEYSPACE, values of VALUE_BYTES 'x' bytes. It
 * first stores every key once (so gets hit), then runs for SECONDS and prints one line:
 *   ops=<n> seconds=<s> ops_per_s=<r> hits=<h> misses=<m> errors=<e>
 * Replies are framed by lines: VALUE headers are followed by one data line (values are
 * 'x' only, so they never contain CRLF), END closes a get, STORED closes a set.
 *
 * Only loopback targets make sense here; it is a benchmark tool, not a client.
 * Build: cc -O2 -o mcload mcload.c
 * Usage: mcload HOST PORT CONNS DEPTH SECONDS [KEYSPACE] [SET_RATIO] [VALUE_BYTES]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define RBUF 262144

typedef struct {
    int fd;
    int outstanding;
    int skip_data_line;
    size_t rlen;
    char rbuf[RBUF];
} conn_t;

static long keyspace = 100000;
static double set_ratio = 0.1;
static int value_bytes = 100;
static char *value;
static unsigned long long rng = 88172645463325252ULL;
static long hits, misses, errors;

static unsigned long long xorshift(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int append_request(char *out, long key, int is_set) {
    if (is_set)
        return sprintf(out, "set %016ld 0 0 %d\r\n%s\r\n", key, value_bytes, value);
    return sprintf(out, "get %016ld\r\n", key);
}

static int send_all(int fd, const char *buf, size_t len) {
    size_t sent = 0;
    while (sent < len) {
        ssize_t n = write(fd, buf + sent, len - sent);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            return -1;
        }
        sent += (size_t)n;
    }
    return 0;
}

static int send_batch(conn_t *c, int depth, long preload_key, long *preload_next) {
    static char out[1 << 20];
    size_t len = 0;
    int n = 0;
    for (; n < depth; n++) {
        if (preload_key >= 0) {
            if (*preload_next >= keyspace) break;
            len += append_request(out + len, (*preload_next)++, 1);
        } else {
            int is_set = (xorshift() % 10000) < (unsigned long long)(set_ratio * 10000);
            len += append_request(out + len, (long)(xorshift() % keyspace), is_set);
        }
    }
    if (n == 0) return 0;
    if (send_all(c->fd, out, len) < 0) return -1;
    c->outstanding = n;
    return n;
}

/* Consume complete reply lines; returns how many requests completed. */
static int consume(conn_t *c) {
    int done = 0;
    size_t pos = 0;
    for (;;) {
        char *nl = memchr(c->rbuf + pos, '\n', c->rlen - pos);
        if (!nl) break;
        size_t end = (size_t)(nl - c->rbuf);
        char *line = c->rbuf + pos;
        size_t llen = end - pos;
        if (c->skip_data_line) {
            c->skip_data_line = 0;
        } else if (llen >= 6 && memcmp(line, "VALUE ", 6) == 0) {
            c->skip_data_line = 1;
            hits++;
        } else if (llen >= 3 && memcmp(line, "END", 3) == 0) {
            done++;
        } else if (llen >= 6 && memcmp(line, "STORED", 6) == 0) {
            done++;
        } else {
            errors++;
            done++;
        }
        pos = end + 1;
    }
    memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
    c->rlen -= pos;
    return done;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s HOST PORT CONNS DEPTH SECONDS [KEYSPACE] [SET_RATIO] [VALUE_BYTES]\n", argv[0]);
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]), nconns = atoi(argv[3]), depth = atoi(argv[4]);
    double seconds = atof(argv[5]);
    if (argc > 6) keyspace = atol(argv[6]);
    if (argc > 7) set_ratio = atof(argv[7]);
    if (argc > 8) value_bytes = atoi(argv[8]);
    if (nconns < 1 || nconns > MAX_CONNS || depth < 1 || depth > 4096 || value_bytes < 1) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    value = malloc((size_t)value_bytes + 1);
    memset(value, 'x', (size_t)value_bytes);
    value[value_bytes] = 0;

    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "bad host\n");
        return 2;
    }
    conn_t *conns = calloc((size_t)nconns, sizeof(conn_t));
    int ep = epoll_create1(0);
    for (int i = 0; i < nconns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
            perror("connect");
            return 1;
        }
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }

    struct epoll_event events[MAX_CONNS];
    /* Phase 1: preload every key (pipelined on all connections). */
    long next_key = 0, loaded = 0;
    for (int i = 0; i < nconns; i++)
        if (send_batch(&conns[i], 64, 0, &next_key) < 0) return 1;
    while (loaded < keyspace) {
        int n = epoll_wait(ep, events, MAX_CONNS, 5000);
        if (n <= 0) { fprintf(stderr, "preload stalled\n"); return 1; }
        for (int e = 0; e < n; e++) {
            conn_t *c = events[e].data.ptr;
            ssize_t r = read(c->fd, c->rbuf + c->rlen, RBUF - c->rlen);
            if (r <= 0) { fprintf(stderr, "server closed during preload\n"); return 1; }
            c->rlen += (size_t)r;
            int done = consume(c);
            loaded += done;
            c->outstanding -= done;
            if (c->outstanding == 0 && send_batch(c, 64, 0, &next_key) < 0) return 1;
        }
    }
    hits = misses = errors = 0;

    /* Phase 2: the timed run. */
    long ops = 0;
    for (int i = 0; i < nconns; i++)
        if (send_batch(&conns[i], depth, -1, NULL) < 0) return 1;
    double start = now_s(), deadline = start + seconds;
    while (now_s() < deadline) {
        int n = epoll_wait(ep, events, MAX_CONNS, 1000);
        for (int e = 0; e < n; e++) {
            conn_t *c = events[e].data.ptr;
            ssize_t r = read(c->fd, c->rbuf + c->rlen, RBUF - c->rlen);
            if (r <= 0) { fprintf(stderr, "server closed the connection\n"); return 1; }
            c->rlen += (size_t)r;
            int done = consume(c);
            ops += done;
            c->outstanding -= done;
            if (c->outstanding == 0 && send_batch(c, depth, -1, NULL) < 0) return 1;
        }
    }
    double elapsed = now_s() - start;
    printf("ops=%ld seconds=%.3f ops_per_s=%.0f hits=%ld errors=%ld\n", ops, elapsed,
           ops / elapsed, hits, errors);
    return 0;
}
