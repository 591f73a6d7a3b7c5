/*
 * Helpers shared by the synchronisation, thread, signal and process
 * scenarios (mutex.c, cond.c, ... sleep.c). diff.h comes first.
 */
#ifndef PATCHALL_SYNC_KIT_H
#define PATCHALL_SYNC_KIT_H

#include "diff.h"

#include <poll.h>
#include <sched.h>
#include <semaphore.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/select.h>

/* An absolute deadline `ms` from now on `clock`. */
static inline struct timespec in_ms(clockid_t clock, long ms)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* A one-way handshake over a pipe: `gate_open` lets one `gate_wait` through.
 * A pipe and not a mutex, so that a broken lock cannot hide behind it. */
struct gate {
    int fd[2];
};

static inline void gate_init(struct gate *g)
{
    MUST(pipe(g->fd) == 0);
}

static inline void gate_open(struct gate *g)
{
    char c = 'g';
    while (write(g->fd[1], &c, 1) < 0)
        MUST(errno == EINTR);
}

static inline void gate_wait(struct gate *g)
{
    char c;
    ssize_t r;
    while ((r = read(g->fd[0], &c, 1)) < 0)
        MUST(errno == EINTR);
    MUST(r == 1);
}

/* Installs `h` for `sig` with `flags` (SA_RESTART, SA_SIGINFO...). */
static inline void on(int sig, void (*h)(int), int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = h;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    MUST(sigaction(sig, &sa, NULL) == 0);
}

/* Blocks (how = SIG_BLOCK) or unblocks one signal in the calling thread. */
static inline void mask1(int how, int sig)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, sig);
    MUST(pthread_sigmask(how, &s, NULL) == 0);
}

/* "yes" if `sig` is blocked in the calling thread. */
static inline const char *blocked(int sig)
{
    sigset_t s;
    pthread_sigmask(SIG_BLOCK, NULL, &s);
    return sigismember(&s, sig) ? "yes" : "no";
}

/* "yes" if `sig` is pending for the thread or the process. */
static inline const char *pending(int sig)
{
    sigset_t s;
    sigpending(&s);
    return sigismember(&s, sig) ? "yes" : "no";
}

/* A scenario that hangs in some mode ends by SIGALRM after 6 s instead of
 * costing the runner its 20 s limit (no native scenario takes 1.2 s). Scenarios
 * that use alarm() themselves replace it. */
__attribute__((constructor)) static void sync_kit_watchdog(void)
{
    alarm(6);
}

/* Time for another thread to reach its blocking call. */
#define SETTLE() msleep(100)

#endif
