/*
 * The differential suite's scenario kit (tests/diff.rs runs it).
 *
 * Each tests/diff/<area>.c holds many small scenarios and ends with
 *
 *     DIFF_MAIN(S(name_one), S(name_two), ...)
 *
 * `prog --list` prints the scenario names, `prog NAME` runs one in a fresh
 * process. tests/diff.rs runs every scenario natively, under LD_PRELOAD, and
 * under `patchall run --green-threads` on 1 and 2 workers, and compares stdout
 * and the exit status with the native run.
 *
 * A scenario prints only what must not vary between runs: return values, errno
 * names, flags, bytes, the order of events, and timings as coarse yes/no
 * answers with wide margins (`took(t0, 80, 2000)`). Never fd numbers, ports,
 * addresses, pids or raw durations. Output goes through `say`, one write(2)
 * per line, so that lines from threads and forked children never interleave
 * and nothing is lost in a stdio buffer at _exit or a crash.
 */
#ifndef PATCHALL_DIFF_H
#define PATCHALL_DIFF_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* One line to stdout in a single write(2). */
__attribute__((format(printf, 1, 2))) static inline void say(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof buf - 2)
        n = sizeof buf - 2;
    buf[n++] = '\n';
    int saved = errno;
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(1, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        p += w;
        n -= w;
    }
    errno = saved;
}

/* errno's symbolic name ("EAGAIN"), "0" for none. */
static inline const char *ename(int e)
{
    if (e == 0)
        return "0";
    const char *n = strerrorname_np(e);
    return n ? n : "E?";
}

/* Evaluates a call returning an integer and prints `label = r` or
 * `label = -1 ENAME`; yields r, with errno as the call left it. */
#define CALL(label, expr)                                                     \
    ({                                                                        \
        errno = 0;                                                            \
        long _r = (long)(expr);                                               \
        int _e = errno;                                                       \
        if (_r < 0)                                                           \
            say("%s = %ld %s", (label), _r, ename(_e));                       \
        else                                                                  \
            say("%s = %ld", (label), _r);                                     \
        errno = _e;                                                           \
        _r;                                                                   \
    })

/* As CALL for pthread-style calls that return the error number. */
#define PCALL(label, expr)                                                    \
    ({                                                                        \
        int _r = (expr);                                                      \
        say("%s = %s", (label), ename(_r));                                   \
        _r;                                                                   \
    })

/* Dies with a message if `cond` is false: a broken setup, not a result. */
#define MUST(cond)                                                            \
    do {                                                                      \
        if (!(cond)) {                                                        \
            say("setup failed: %s (line %d, errno %s)", #cond, __LINE__,      \
                ename(errno));                                                \
            _exit(99);                                                        \
        }                                                                     \
    } while (0)

static inline long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "yes" when lo <= now - t0 < hi milliseconds: for "it waited" / "it did not
 * wait the whole timeout", never for speed. */
static inline const char *took(long long t0, long long lo, long long hi)
{
    long long d = now_ms() - t0;
    return d >= lo && d < hi ? "yes" : "no";
}

static inline void msleep(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static inline pthread_t spawn(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    int r = pthread_create(&t, NULL, fn, arg);
    if (r != 0) {
        say("setup failed: pthread_create %s", ename(r));
        _exit(99);
    }
    return t;
}

static inline void *join(pthread_t t)
{
    void *ret = NULL;
    int r = pthread_join(t, &ret);
    if (r != 0) {
        say("setup failed: pthread_join %s", ename(r));
        _exit(99);
    }
    return ret;
}

/* A TCP listener on 127.0.0.1, port chosen by the kernel. */
static inline int tcp_listener(int *port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    MUST(s >= 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    MUST(bind(s, (struct sockaddr *)&a, sizeof a) == 0);
    MUST(listen(s, 128) == 0);
    socklen_t len = sizeof a;
    MUST(getsockname(s, (struct sockaddr *)&a, &len) == 0);
    *port = ntohs(a.sin_port);
    return s;
}

static inline struct sockaddr_in loopback(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

/* A connected TCP pair over loopback: *c the client, *s the accepted side. */
static inline void tcp_pair(int *c, int *s)
{
    int port;
    int l = tcp_listener(&port);
    *c = socket(AF_INET, SOCK_STREAM, 0);
    MUST(*c >= 0);
    struct sockaddr_in a = loopback(port);
    MUST(connect(*c, (struct sockaddr *)&a, sizeof a) == 0);
    *s = accept(l, NULL, NULL);
    MUST(*s >= 0);
    close(l);
}

/* A port on 127.0.0.1 that nothing listens on (bound, then closed). */
static inline int closed_port(void)
{
    int port;
    int l = tcp_listener(&port);
    close(l);
    return port;
}

/* The open fd flags a scenario may print: O_NONBLOCK and O_APPEND only. */
static inline const char *flags_of(int fd)
{
    int f = fcntl(fd, F_GETFL);
    if (f < 0)
        return ename(errno);
    if ((f & O_NONBLOCK) && (f & O_APPEND))
        return "NONBLOCK|APPEND";
    if (f & O_NONBLOCK)
        return "NONBLOCK";
    if (f & O_APPEND)
        return "APPEND";
    return "-";
}

/* How a child ended: "exit N" or "signal NAME". */
static inline const char *status_of(int st)
{
    static char buf[64];
    if (WIFEXITED(st))
        snprintf(buf, sizeof buf, "exit %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, sizeof buf, "signal %s", sigabbrev_np(WTERMSIG(st)));
    else
        snprintf(buf, sizeof buf, "status %#x", st);
    return buf;
}

struct diff_scenario {
    const char *name;
    void (*fn)(void);
};

#define S(fn) {#fn, fn}

#define DIFF_MAIN(...)                                                        \
    static const struct diff_scenario diff_scenarios[] = {__VA_ARGS__};       \
    int main(int argc, char **argv)                                           \
    {                                                                         \
        size_t n = sizeof diff_scenarios / sizeof diff_scenarios[0];          \
        if (argc == 2 && strcmp(argv[1], "--list") == 0) {                    \
            for (size_t i = 0; i < n; i++)                                    \
                say("%s", diff_scenarios[i].name);                            \
            return 0;                                                         \
        }                                                                     \
        for (size_t i = 0; argc == 2 && i < n; i++) {                         \
            if (strcmp(argv[1], diff_scenarios[i].name) == 0) {               \
                diff_scenarios[i].fn();                                       \
                return 0;                                                     \
            }                                                                 \
        }                                                                     \
        fprintf(stderr, "usage: %s --list | SCENARIO\n", argv[0]);            \
        return 2;                                                             \
    }

#endif
