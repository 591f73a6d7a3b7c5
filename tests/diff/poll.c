/* poll and ppoll: every timeout kind, readiness made by another thread,
 * POLLNVAL, POLLHUP, many fds, signals during the wait. */
#include "diff.h"
#include <poll.h>
#include <sys/resource.h>

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

static const char *ev(short r)
{
    static char buf[96];
    buf[0] = 0;
    if (r & POLLIN)
        strcat(buf, "IN|");
    if (r & POLLPRI)
        strcat(buf, "PRI|");
    if (r & POLLOUT)
        strcat(buf, "OUT|");
    if (r & POLLRDHUP)
        strcat(buf, "RDHUP|");
    if (r & POLLERR)
        strcat(buf, "ERR|");
    if (r & POLLHUP)
        strcat(buf, "HUP|");
    if (r & POLLNVAL)
        strcat(buf, "NVAL|");
    size_t n = strlen(buf);
    if (n)
        buf[n - 1] = 0;
    else
        strcpy(buf, "-");
    return buf;
}

static void timeout_zero_empty(void)
{
    MUST(pipe(P) == 0);
    struct pollfd p = {P[0], POLLIN, 0};
    long long t0 = now_ms();
    CALL("poll 0", poll(&p, 1, 0));
    say("revents %s, at once %s", ev(p.revents), took(t0, 0, 50));
}

static void timeout_finite_expires(void)
{
    MUST(pipe(P) == 0);
    struct pollfd p = {P[0], POLLIN, 0};
    long long t0 = now_ms();
    CALL("poll 100", poll(&p, 1, 100));
    say("revents %s, took ~100ms %s", ev(p.revents), took(t0, 90, 2000));
}

static void timeout_infinite_thread_writes(void)
{
    MUST(pipe(P) == 0);
    pthread_t t = spawn(write_after, NULL);
    struct pollfd p = {P[0], POLLIN, 0};
    CALL("main: poll -1", poll(&p, 1, -1));
    say("main: revents %s", ev(p.revents));
    join(t);
}

static void timeout_finite_thread_writes(void)
{
    MUST(pipe(P) == 0);
    pthread_t t = spawn(write_after, NULL);
    struct pollfd p = {P[0], POLLIN, 0};
    long long t0 = now_ms();
    CALL("main: poll 5000", poll(&p, 1, 5000));
    say("main: revents %s, early %s", ev(p.revents), took(t0, 30, 4000));
    join(t);
}

static void pollnval_closed_fd(void)
{
    MUST(pipe(P) == 0);
    close(P[0]);
    struct pollfd p[2] = {{P[0], POLLIN, 0}, {P[1], POLLOUT, 0}};
    CALL("poll", poll(p, 2, 1000));
    say("revents %s / %s", ev(p[0].revents), ev(p[1].revents));
}

static void negative_fd_ignored(void)
{
    struct pollfd p[2] = {{-1, POLLIN, 0}, {-5, POLLIN, 0}};
    long long t0 = now_ms();
    CALL("poll negative fds 100", poll(p, 2, 100));
    say("revents %s %s, waited %s", ev(p[0].revents), ev(p[1].revents), took(t0, 90, 2000));
}

static void pollhup_pipe(void)
{
    MUST(pipe(P) == 0);
    MUST(write(P[1], "d", 1) == 1);
    close(P[1]);
    struct pollfd p = {P[0], POLLIN, 0};
    CALL("poll", poll(&p, 1, 1000));
    say("revents %s", ev(p.revents));
    char c;
    MUST(read(P[0], &c, 1) == 1);
    CALL("poll after drain", poll(&p, 1, 1000));
    say("revents %s", ev(p.revents));
}

static void *close_write_after(void *arg)
{
    (void)arg;
    msleep(50);
    say("other: closing write end");
    close(P[1]);
    return NULL;
}

static void pollhup_woken_by_close(void)
{
    MUST(pipe(P) == 0);
    pthread_t t = spawn(close_write_after, NULL);
    struct pollfd p = {P[0], POLLIN, 0};
    CALL("main: poll", poll(&p, 1, -1));
    say("main: revents %s", ev(p.revents));
    join(t);
}

static void pollerr_pipe_write_end(void)
{
    MUST(pipe(P) == 0);
    close(P[0]);
    struct pollfd p = {P[1], POLLOUT, 0};
    CALL("poll", poll(&p, 1, 1000));
    say("revents %s", ev(p.revents));
}

static void rdhup_socketpair(void)
{
    int sp[2];
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
    shutdown(sp[1], SHUT_WR);
    struct pollfd p = {sp[0], POLLIN | POLLRDHUP, 0};
    CALL("poll", poll(&p, 1, 1000));
    say("revents %s", ev(p.revents));
}

static void *drain_after(void *arg)
{
    (void)arg;
    msleep(50);
    say("drainer: draining");
    char buf[65536];
    while (read(P[0], buf, sizeof buf) == (ssize_t)sizeof buf)
        ;
    return NULL;
}

static void pollout_after_drain(void)
{
    MUST(pipe2(P, O_NONBLOCK) == 0);
    char buf[4096] = {0};
    while (write(P[1], buf, sizeof buf) > 0)
        ;
    struct pollfd p = {P[1], POLLOUT, 0};
    CALL("poll full pipe", poll(&p, 1, 0));
    pthread_t t = spawn(drain_after, NULL);
    CALL("main: poll -1", poll(&p, 1, -1));
    say("main: revents %s", ev(p.revents));
    join(t);
}

enum { MANY = 300 };
static int FDS[MANY][2];

static void *write_one_of_many(void *arg)
{
    long i = (long)arg;
    msleep(50);
    say("writer: writing to pipe %ld", i);
    MUST(write(FDS[i][1], "m", 1) == 1);
    return NULL;
}

static void many_fds_one_ready(void)
{
    static struct pollfd p[MANY];
    for (int i = 0; i < MANY; i++) {
        MUST(pipe(FDS[i]) == 0);
        p[i] = (struct pollfd){FDS[i][0], POLLIN, 0};
    }
    pthread_t t = spawn(write_one_of_many, (void *)237L);
    CALL("main: poll 300 fds", poll(p, MANY, 5000));
    for (int i = 0; i < MANY; i++)
        if (p[i].revents)
            say("ready: %d %s", i, ev(p[i].revents));
    join(t);
}

static void nfds_zero_sleeps(void)
{
    long long t0 = now_ms();
    CALL("poll(NULL, 0, 100)", poll(NULL, 0, 100));
    say("took ~100ms %s", took(t0, 90, 2000));
}

static void nfds_too_many(void)
{
    struct pollfd p = {0, POLLIN, 0};
    volatile nfds_t n = 1u << 30;
    CALL("poll nfds > RLIMIT_NOFILE", poll(&p, n, 0));
}

static void *poll_waiter(void *arg)
{
    long id = (long)arg;
    (void)id;
    struct pollfd p = {P[0], POLLIN, 0};
    long r = poll(&p, 1, 5000);
    return (void *)(r * 100 + p.revents);
}

static void two_threads_poll_same_fd(void)
{
    MUST(pipe(P) == 0);
    pthread_t a = spawn(poll_waiter, (void *)1L), b = spawn(poll_waiter, (void *)2L);
    msleep(50);
    say("main: writing");
    MUST(write(P[1], "x", 1) == 1);
    long ra = (long)join(a), rb = (long)join(b);
    say("waiter 1: poll = %ld revents %s", ra / 100, ev(ra % 100));
    say("waiter 2: poll = %ld revents %s", rb / 100, ev(rb % 100));
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

static void listener_pollin_on_connect(void)
{
    int port;
    int l = tcp_listener(&port);
    pthread_t t = spawn(connect_after, (void *)(long)port);
    struct pollfd p = {l, POLLIN, 0};
    CALL("main: poll listener", poll(&p, 1, 5000));
    say("main: revents %s", ev(p.revents));
    CALL("accept ok", accept(l, NULL, NULL) >= 0);
    close((int)(long)join(t));
}

static void ppoll_timeouts(void)
{
    MUST(pipe(P) == 0);
    struct pollfd p = {P[0], POLLIN, 0};
    struct timespec zero = {0, 0}, hundred = {0, 100000000};
    CALL("ppoll zero", ppoll(&p, 1, &zero, NULL));
    long long t0 = now_ms();
    CALL("ppoll 100ms", ppoll(&p, 1, &hundred, NULL));
    say("took ~100ms %s", took(t0, 90, 2000));
    pthread_t t = spawn(write_after, NULL);
    CALL("main: ppoll NULL", ppoll(&p, 1, NULL, NULL));
    say("main: revents %s", ev(p.revents));
    join(t);
}

static void ppoll_bad_timeout(void)
{
    struct pollfd p = {0, POLLIN, 0};
    struct timespec bad = {0, 1000000000};
    CALL("ppoll tv_nsec 1e9", ppoll(&p, 1, &bad, NULL));
}

static void *kill_main_after(void *arg)
{
    (void)arg;
    msleep(50);
    say("other: signalling main");
    pthread_kill(MAIN, SIGUSR1);
    return NULL;
}

static void ppoll_mask_unblocks_signal(void)
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
    struct pollfd p = {P[0], POLLIN, 0};
    struct timespec ts = {1, 0};
    CALL("main: ppoll with SIGUSR1 unblocked", ppoll(&p, 1, &ts, &empty));
    say("handler ran %d", (int)GOT);
    join(t);
}

static void ppoll_mask_blocks_signal(void)
{
    MAIN = pthread_self();
    struct sigaction sa = {.sa_handler = on_usr1};
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    MUST(pipe(P) == 0);
    pthread_t t = spawn(kill_main_after, NULL);
    struct pollfd p = {P[0], POLLIN, 0};
    struct timespec ts = {0, 200000000};
    CALL("main: ppoll with SIGUSR1 blocked", ppoll(&p, 1, &ts, &block));
    say("handler ran during the wait %d", (int)GOT);
    join(t);
    msleep(1);
    say("handler ran after %d", (int)GOT);
}

static void poll_eintr_no_restart(void)
{
    MAIN = pthread_self();
    struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_RESTART};
    sigaction(SIGUSR1, &sa, NULL);
    MUST(pipe(P) == 0);
    pthread_t t = spawn(kill_main_after, NULL);
    struct pollfd p = {P[0], POLLIN, 0};
    CALL("main: poll 5000 (SA_RESTART does not restart poll)", poll(&p, 1, 5000));
    say("handler ran %d", (int)GOT);
    join(t);
}

static void poll_busy_loop_lets_others_run(void)
{
    MUST(pipe(P) == 0);
    pthread_t t = spawn(write_after, NULL);
    struct pollfd p = {P[0], POLLIN, 0};
    long spins = 0;
    long long t0 = now_ms();
    while (poll(&p, 1, 0) == 0 && now_ms() - t0 < 1000)
        spins++;
    say("main: %s after spinning (%s)", p.revents ? "ready" : "not ready",
        spins > 0 ? "spun" : "no spin");
    if (!p.revents)
        _exit(1); /* the writer never ran: do not join it */
    join(t);
}


static void poll_more_than_1024_fds(void)
{
    struct rlimit rl;
    MUST(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
    MUST(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    enum { N = 1100 };
    static struct pollfd p[N];
    static int w[N];
    for (int i = 0; i < N; i++) {
        int fds[2];
        MUST(pipe(fds) == 0);
        p[i] = (struct pollfd){fds[0], POLLIN, 0};
        w[i] = fds[1];
    }
    P[1] = w[1077];
    pthread_t t = spawn(write_after, NULL);
    CALL("main: poll 1100 fds", poll(p, N, 2000));
    for (int i = 0; i < N; i++)
        if (p[i].revents)
            say("ready: %d %s", i, ev(p[i].revents));
    join(t);
}

DIFF_MAIN(S(timeout_zero_empty), S(timeout_finite_expires), S(timeout_infinite_thread_writes),
          S(timeout_finite_thread_writes), S(pollnval_closed_fd), S(negative_fd_ignored),
          S(pollhup_pipe), S(pollhup_woken_by_close), S(pollerr_pipe_write_end),
          S(rdhup_socketpair), S(pollout_after_drain), S(many_fds_one_ready),
          S(nfds_zero_sleeps), S(nfds_too_many), S(two_threads_poll_same_fd),
          S(listener_pollin_on_connect), S(ppoll_timeouts), S(ppoll_bad_timeout),
          S(ppoll_mask_unblocks_signal), S(ppoll_mask_blocks_signal),
          S(poll_eintr_no_restart), S(poll_busy_loop_lets_others_run), S(poll_more_than_1024_fds))
