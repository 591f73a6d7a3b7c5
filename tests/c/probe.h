/*
 * Shared helpers for the differential probes: each probe prints one line per
 * scenario, with nothing that varies between runs (no fd numbers, addresses,
 * ports or durations), so its output plain and under LD_PRELOAD=libpatchall.so
 * can be compared byte for byte, and against tests/c/<probe>.expected.
 */
#ifndef PATCHALL_PROBE_H
#define PATCHALL_PROBE_H

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static inline const char *errname(int e)
{
    static char other[32];
    switch (e) {
    case 0: return "0";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EAGAIN: return "EAGAIN";
    case EBADF: return "EBADF";
    case EDOM: return "EDOM";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ECONNRESET: return "ECONNRESET";
    case EFAULT: return "EFAULT";
    case EINPROGRESS: return "EINPROGRESS";
    case EINTR: return "EINTR";
    case EINVAL: return "EINVAL";
    case EISCONN: return "EISCONN";
    case ENOENT: return "ENOENT";
    case ENOSYS: return "ENOSYS";
    case ENOTCONN: return "ENOTCONN";
    case ENOTSOCK: return "ENOTSOCK";
    case ENOTSUP: return "ENOTSUP";
    case ENOTTY: return "ENOTTY";
    case EPIPE: return "EPIPE";
    case ESPIPE: return "ESPIPE";
    default:
        snprintf(other, sizeof other, "errno%d", e);
        return other;
    }
}

/* Runs EXPR with errno cleared and prints its result and the errno it left. */
#define CHECK(name, expr)                                                         \
    do {                                                                          \
        errno = 0;                                                                \
        long check_ret_ = (long)(expr);                                           \
        int check_errno_ = errno;                                                 \
        printf("%s: ret=%ld errno=%s\n", (name), check_ret_, errname(check_errno_)); \
    } while (0)

/* Like CHECK for calls that return an error number instead of setting errno. */
#define CHECK_RC(name, expr)                                                      \
    do {                                                                          \
        errno = 0;                                                                \
        int check_rc_ = (expr);                                                   \
        int check_errno_ = errno;                                                 \
        printf("%s: rc=%s errno=%s\n", (name), errname(check_rc_), errname(check_errno_)); \
    } while (0)

#define FACT(name, cond) printf("%s: %s\n", (name), (cond) ? "yes" : "no")

/* Fatal setup failure: the probe cannot run its scenarios. */
#define MUST(expr)                                                                \
    do {                                                                          \
        if ((expr) < 0) {                                                         \
            fprintf(stderr, "probe setup failed: %s: %s\n", #expr, strerror(errno)); \
            exit(2);                                                              \
        }                                                                         \
    } while (0)

/*
 * A size the compiler cannot see through, so that -D_FORTIFY_SOURCE routes
 * read/recv/poll to their checking variants (__read_chk, __recv_chk, __poll_chk)
 * instead of proving the call safe at compile time.
 */
static inline size_t opaque(size_t n)
{
    volatile size_t v = n;
    return v;
}

static inline int opaque_int(int n)
{
    volatile int v = n;
    return v;
}

/* A pointer whose object size the compiler cannot see: for calls that must reach
 * the kernel's own argument checks rather than a fortify abort. */
static inline void *opaque_ptr(void *p)
{
    void *volatile v = p;
    return v;
}

/*
 * `probe DIR overflow` runs the probe's fortify overflow instead of its
 * scenarios: built with -D_FORTIFY_SOURCE, the checking variant must abort.
 */
static inline int overflow_requested(int argc, char **argv)
{
    return argc > 2 && strcmp(argv[2], "overflow") == 0;
}

static inline void probe_start(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
}

static inline double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Elapsed time in a generous window: timing is checked, never printed. */
#define ELAPSED_WITHIN(name, start, lo_ms, hi_ms)                                 \
    do {                                                                          \
        double el_ = now_ms() - (start);                                          \
        FACT(name, el_ >= (lo_ms) && el_ < (hi_ms));                              \
    } while (0)

static volatile sig_atomic_t alarms;
static volatile int alarm_write_fd = -1;

static inline void on_alarm(int sig)
{
    (void)sig;
    alarms++;
    if (alarm_write_fd >= 0) {
        int saved = errno;
        (void)!write(alarm_write_fd, "x", 1);
        errno = saved;
    }
}

/*
 * Arms a one-shot SIGALRM in `ms` milliseconds. With `restart`, the handler is
 * installed with SA_RESTART; if `write_fd` >= 0 it writes one byte there.
 */
static inline void arm_alarm(int ms, int restart, int write_fd)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = restart ? SA_RESTART : 0;
    MUST(sigaction(SIGALRM, &sa, NULL));
    alarms = 0;
    alarm_write_fd = write_fd;
    struct itimerval it;
    memset(&it, 0, sizeof it);
    it.it_value.tv_sec = ms / 1000;
    it.it_value.tv_usec = (ms % 1000) * 1000;
    MUST(setitimer(ITIMER_REAL, &it, NULL));
}

/* Cancels a timer that has not fired and restores the default disposition. */
static inline void disarm_alarm(void)
{
    struct itimerval off;
    memset(&off, 0, sizeof off);
    MUST(setitimer(ITIMER_REAL, &off, NULL));
    signal(SIGALRM, SIG_DFL);
    alarm_write_fd = -1;
}

#endif
