/* select and pselect: timeouts (and what is left of them), readiness made by
 * another thread, EBADF, many fds, nfds beyond FD_SETSIZE, signal masks. */
#include "diff.h"
#include <sys/resource.h>
#include <sys/select.h>

static int P[2];
static pthread_t MAIN;
static volatile sig_atomic_t GOT;

static void on_usr1(int s)
{
    (void)s;
    GOT++;
}

static void *write_after(void *arg)
{
    (void)arg;
    msleep(50);
    say("writer: writing");
    MUST(write(P[1], "x", 1) == 1);
    return NULL;
}

static void timeout_zero(void)
{
    MUST(pipe(P) == 0);
    fd_set r;
    FD_ZERO(&r);
    FD_SET(P[0], &r);
    struct timeval tv = {0, 0};
    CALL("select 0", select(P[0] + 1, &r, NULL, NULL, &tv));
    say("still set %d", FD_ISSET(P[0], &r));
}

static void timeout_finite_expires(void)
{
    MUST(pipe(P) == 0);
    fd_set r;
    FD_ZERO(&r);
    FD_SET(P[0], &r);
    struct timeval tv = {0, 100000};
    long long t0 = now_ms();
    CALL("select 100ms", select(P[0] + 1, &r, NULL, NULL, &tv));
    say("took ~100ms %s, tv left %ld.%06ld, still set %d", took(t0, 90, 2000),
        (long)tv.tv_sec, (long)tv.tv_usec, FD_ISSET(P[0], &r));
}

static void timeout_infinite_thread_writes(void)
{
    MUST(pipe(P) == 0);
    pthread_t t = spawn(write_after, NULL);
    fd_set r;
    FD_ZERO(&r);
    FD_SET(P[0], &r);
    CALL("main: select NULL", select(P[0] + 1, &r, NULL, NULL, NULL));
    say("main: set %d", FD_ISSET(P[0], &r));
    join(t);
}

static void timeout_left_after_early_wake(void)
{
    MUST(pipe(P) == 0);
    pthread_t t = spawn(write_after, NULL);
    fd_set r;
    FD_ZERO(&r);
    FD_SET(P[0], &r);
    struct timeval tv = {5, 0};
    CALL("main: select 5s", select(P[0] + 1, &r, NULL, NULL, &tv));
    long left = tv.tv_sec * 1000 + tv.tv_usec / 1000;
    say("main: set %d, time left between 1 and 4.97 s: %s", FD_ISSET(P[0], &r),
        left > 1000 && left < 4970 ? "yes" : "no");
    join(t);
}

static void ebadf_closed_fd(void)
{
    MUST(pipe(P) == 0);
    close(P[0]);
    fd_set r;
    FD_ZERO(&r);
    FD_SET(P[0], &r);
    struct timeval tv = {1, 0};
    CALL("select closed fd", select(P[0] + 1, &r, NULL, NULL, &tv));
}

static void negative_nfds(void)
{
    struct timeval tv = {0, 0};
    CALL("select nfds -1", select(-1, NULL, NULL, NULL, &tv));
    struct timeval bad = {0, -1};
    CALL("select bad timeout", select(0, NULL, NULL, NULL, &bad));
}

static void empty_sets_sleep(void)
{
    struct timeval tv = {0, 100000};
    long long t0 = now_ms();
    CALL("select(0, NULL...) 100ms", select(0, NULL, NULL, NULL, &tv));
    say("took ~100ms %s", took(t0, 90, 2000));
}

static void writefds_full_then_drained(void)
{
    MUST(pipe2(P, O_NONBLOCK) == 0);
    char buf[4096] = {0};
    while (write(P[1], buf, sizeof buf) > 0)
        ;
    fd_set w;
    FD_ZERO(&w);
    FD_SET(P[1], &w);
    struct timeval tv = {0, 0};
    CALL("select full pipe", select(P[1] + 1, NULL, &w, NULL, &tv));
    char big[65536];
    while (read(P[0], big, sizeof big) > 0)
        ;
    FD_ZERO(&w);
    FD_SET(P[1], &w);
    CALL("select drained pipe", select(P[1] + 1, NULL, &w, NULL, NULL));
}

static void readable_at_eof(void)
{
    MUST(pipe(P) == 0);
    close(P[1]);
    fd_set r;
    FD_ZERO(&r);
    FD_SET(P[0], &r);
    CALL("select at EOF", select(P[0] + 1, &r, NULL, NULL, NULL));
}

static void *oob_after(void *arg)
{
    int fd = (int)(long)arg;
    msleep(50);
    say("peer: sending OOB");
    MUST(send(fd, "!", 1, MSG_OOB) == 1);
    return NULL;
}

static void exceptfds_oob(void)
{
    int c, a;
    tcp_pair(&c, &a);
    pthread_t t = spawn(oob_after, (void *)(long)a);
    fd_set e;
    FD_ZERO(&e);
    FD_SET(c, &e);
    struct timeval tv = {5, 0};
    CALL("main: select exceptfds", select(c + 1, NULL, NULL, &e, &tv));
    say("main: exceptional %d", FD_ISSET(c, &e));
    char x = 0;
    CALL("recv MSG_OOB", recv(c, &x, 1, MSG_OOB));
    say("oob %c", x);
    join(t);
}

enum { MANY = 300 };
static int FDS[MANY][2];

static void *write_one(void *arg)
{
    long i = (long)arg;
    msleep(50);
    say("writer: pipe %ld", i);
    MUST(write(FDS[i][1], "m", 1) == 1);
    return NULL;
}

static void many_fds_one_ready(void)
{
    fd_set r;
    FD_ZERO(&r);
    int maxfd = 0;
    for (int i = 0; i < MANY; i++) {
        MUST(pipe(FDS[i]) == 0);
        FD_SET(FDS[i][0], &r);
        if (FDS[i][0] > maxfd)
            maxfd = FDS[i][0];
    }
    pthread_t t = spawn(write_one, (void *)123L);
    CALL("main: select 300 fds", select(maxfd + 1, &r, NULL, NULL, NULL));
    for (int i = 0; i < MANY; i++)
        if (FD_ISSET(FDS[i][0], &r))
            say("main: ready %d", i);
    join(t);
}

/* A bitmap for fds up to HIGH, allocated by hand as programs with many
 * connections do (glibc's fd_set holds 1024). */
enum { HIGH = 1500 };

static void raise_nofile(void)
{
    struct rlimit rl;
    MUST(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    if (rl.rlim_cur < HIGH + 10) {
        rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
        MUST(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    }
}

static void *write_high(void *arg)
{
    (void)arg;
    msleep(50);
    say("writer: writing");
    MUST(write(P[1], "h", 1) == 1);
    return NULL;
}

static void nfds_beyond_fd_setsize(void)
{
    raise_nofile();
    MUST(pipe(P) == 0);
    MUST(dup2(P[0], HIGH) == HIGH);
    size_t words = (HIGH + 64) / 64;
    unsigned long *r = calloc(words, sizeof *r);
    r[HIGH / 64] |= 1UL << (HIGH % 64);
    pthread_t t = spawn(write_high, NULL);
    struct timeval tv = {5, 0};
    CALL("main: select fd 1500", select(HIGH + 1, (fd_set *)r, NULL, NULL, &tv));
    say("main: bit set %d", (r[HIGH / 64] >> (HIGH % 64)) & 1 ? 1 : 0);
    join(t);
}

static void nfds_beyond_fd_setsize_timeout(void)
{
    raise_nofile();
    MUST(pipe(P) == 0);
    MUST(dup2(P[0], HIGH) == HIGH);
    size_t words = (HIGH + 64) / 64;
    unsigned long *r = calloc(words, sizeof *r);
    r[HIGH / 64] |= 1UL << (HIGH % 64);
    struct timeval tv = {0, 100000};
    long long t0 = now_ms();
    CALL("select fd 1500, 100ms", select(HIGH + 1, (fd_set *)r, NULL, NULL, &tv));
    say("took ~100ms %s, bit %d", took(t0, 90, 2000),
        (r[HIGH / 64] >> (HIGH % 64)) & 1 ? 1 : 0);
    close(HIGH);
    r[HIGH / 64] |= 1UL << (HIGH % 64);
    tv = (struct timeval){0, 0};
    CALL("select closed fd 1500", select(HIGH + 1, (fd_set *)r, NULL, NULL, &tv));
}

static void *select_waiter(void *arg)
{
    (void)arg;
    fd_set r;
    FD_ZERO(&r);
    FD_SET(P[0], &r);
    struct timeval tv = {5, 0};
    long n = select(P[0] + 1, &r, NULL, NULL, &tv);
    return (void *)(n * 10 + FD_ISSET(P[0], &r));
}

static void two_threads_same_fd(void)
{
    MUST(pipe(P) == 0);
    pthread_t a = spawn(select_waiter, NULL), b = spawn(select_waiter, NULL);
    msleep(50);
    say("main: writing");
    MUST(write(P[1], "x", 1) == 1);
    long ra = (long)join(a), rb = (long)join(b);
    say("waiters: %ld %ld", ra, rb);
}

static void pselect_timeouts(void)
{
    MUST(pipe(P) == 0);
    fd_set r;
    FD_ZERO(&r);
    FD_SET(P[0], &r);
    struct timespec zero = {0, 0}, hundred = {0, 100000000};
    CALL("pselect 0", pselect(P[0] + 1, &r, NULL, NULL, &zero, NULL));
    FD_SET(P[0], &r);
    long long t0 = now_ms();
    CALL("pselect 100ms", pselect(P[0] + 1, &r, NULL, NULL, &hundred, NULL));
    say("took ~100ms %s, timespec untouched %d", took(t0, 90, 2000),
        hundred.tv_nsec == 100000000);
    FD_SET(P[0], &r);
    pthread_t t = spawn(write_after, NULL);
    CALL("main: pselect NULL", pselect(P[0] + 1, &r, NULL, NULL, NULL, NULL));
    join(t);
}

static void *kill_main_after(void *arg)
{
    (void)arg;
    msleep(50);
    say("other: signalling main");
    pthread_kill(MAIN, SIGUSR1);
    return NULL;
}

static void pselect_mask_unblocks_signal(void)
{
    MAIN = pthread_self();
    struct sigaction sa = {.sa_handler = on_usr1};
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t block, empty;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigemptyset(&empty);
    pthread_sigmask(SIG_BLOCK, &block, NULL);
    MUST(pipe(P) == 0);
    pthread_t t = spawn(kill_main_after, NULL);
    fd_set r;
    FD_ZERO(&r);
    FD_SET(P[0], &r);
    struct timespec ts = {1, 0};
    CALL("main: pselect, SIGUSR1 unblocked", pselect(P[0] + 1, &r, NULL, NULL, &ts, &empty));
    say("handler ran %d", (int)GOT);
    join(t);
}

static void pselect_mask_blocks_signal(void)
{
    MAIN = pthread_self();
    struct sigaction sa = {.sa_handler = on_usr1};
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    MUST(pipe(P) == 0);
    pthread_t t = spawn(kill_main_after, NULL);
    fd_set r;
    FD_ZERO(&r);
    FD_SET(P[0], &r);
    struct timespec ts = {0, 200000000};
    CALL("main: pselect, SIGUSR1 blocked", pselect(P[0] + 1, &r, NULL, NULL, &ts, &block));
    join(t);
    say("handler ran after %d", (int)GOT);
}

static void select_eintr_even_with_restart(void)
{
    MAIN = pthread_self();
    struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_RESTART};
    sigaction(SIGUSR1, &sa, NULL);
    MUST(pipe(P) == 0);
    pthread_t t = spawn(kill_main_after, NULL);
    fd_set r;
    FD_ZERO(&r);
    FD_SET(P[0], &r);
    struct timeval tv = {5, 0};
    CALL("main: select", select(P[0] + 1, &r, NULL, NULL, &tv));
    say("handler ran %d", (int)GOT);
    join(t);
}

static void *connect_after(void *arg)
{
    int port = (int)(long)arg;
    msleep(50);
    say("client: connecting");
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(port);
    MUST(connect(s, (struct sockaddr *)&a, sizeof a) == 0);
    return (void *)(long)s;
}

static void listener_readable_on_connect(void)
{
    int port;
    int l = tcp_listener(&port);
    pthread_t t = spawn(connect_after, (void *)(long)port);
    fd_set r;
    FD_ZERO(&r);
    FD_SET(l, &r);
    CALL("main: select listener", select(l + 1, &r, NULL, NULL, NULL));
    CALL("accept ok", accept(l, NULL, NULL) >= 0);
    close((int)(long)join(t));
}

static void nfds_beyond_fd_setsize_low_fd(void)
{
    raise_nofile();
    MUST(pipe(P) == 0);
    size_t words = (HIGH + 64) / 64;
    unsigned long *r = calloc(words, sizeof *r);
    r[P[0] / 64] |= 1UL << (P[0] % 64);
    pthread_t t = spawn(write_high, NULL);
    struct timeval tv = {1, 0};
    CALL("main: select nfds 1501, a low fd", select(HIGH + 1, (fd_set *)r, NULL, NULL, &tv));
    say("main: bit set %d", (r[P[0] / 64] >> (P[0] % 64)) & 1 ? 1 : 0);
    join(t);
}

DIFF_MAIN(S(timeout_zero), S(timeout_finite_expires), S(timeout_infinite_thread_writes),
          S(timeout_left_after_early_wake), S(ebadf_closed_fd), S(negative_nfds),
          S(empty_sets_sleep), S(writefds_full_then_drained), S(readable_at_eof),
          S(exceptfds_oob), S(many_fds_one_ready), S(nfds_beyond_fd_setsize),
          S(nfds_beyond_fd_setsize_timeout), S(two_threads_same_fd), S(pselect_timeouts),
          S(pselect_mask_unblocks_signal), S(pselect_mask_blocks_signal),
          S(select_eintr_even_with_restart), S(listener_readable_on_connect), S(nfds_beyond_fd_setsize_low_fd))
