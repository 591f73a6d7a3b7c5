/* epoll: timeouts, readiness from another thread, ET/ONESHOT/EXCLUSIVE,
 * epoll_ctl errors, nesting, epoll_pwait/epoll_pwait2 masks. */
#include "diff.h"
#include <poll.h>
#include <sys/epoll.h>

static int P[2], EP;
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

static void setup(uint32_t events)
{
    MUST(pipe(P) == 0);
    EP = epoll_create1(EPOLL_CLOEXEC);
    MUST(EP >= 0);
    struct epoll_event e = {.events = events, .data.u64 = 0x1234567890abcdefULL};
    MUST(epoll_ctl(EP, EPOLL_CTL_ADD, P[0], &e) == 0);
}

static void wait_say(const char *label, int timeout)
{
    struct epoll_event out[4];
    memset(out, 0, sizeof out);
    int n = epoll_wait(EP, out, 4, timeout);
    if (n < 0)
        say("%s = -1 %s", label, ename(errno));
    else if (n == 0)
        say("%s = 0", label);
    else
        say("%s = %d events %#x data %#llx", label, n, out[0].events,
            (unsigned long long)out[0].data.u64);
}

static void timeout_zero_and_finite(void)
{
    setup(EPOLLIN);
    wait_say("epoll_wait 0", 0);
    long long t0 = now_ms();
    wait_say("epoll_wait 100", 100);
    say("took ~100ms %s", took(t0, 90, 2000));
}

static void timeout_infinite_thread_writes(void)
{
    setup(EPOLLIN);
    pthread_t t = spawn(write_after, NULL);
    wait_say("main: epoll_wait -1", -1);
    join(t);
}

static void level_triggered_repeats(void)
{
    setup(EPOLLIN);
    MUST(write(P[1], "ab", 2) == 2);
    wait_say("first", 0);
    wait_say("second (level: again)", 0);
    char buf[2];
    MUST(read(P[0], buf, 2) == 2);
    wait_say("after read", 0);
}

static void edge_triggered_once(void)
{
    setup(EPOLLIN | EPOLLET);
    pthread_t t = spawn(write_after, NULL);
    wait_say("main: first", -1);
    join(t);
    wait_say("second (edge: none)", 50);
    MUST(write(P[1], "y", 1) == 1);
    wait_say("after another write", 0);
}

static void oneshot_then_rearm(void)
{
    setup(EPOLLIN | EPOLLONESHOT);
    MUST(write(P[1], "a", 1) == 1);
    wait_say("first", 0);
    wait_say("second (disarmed)", 50);
    struct epoll_event e = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = 7};
    CALL("EPOLL_CTL_MOD rearm", epoll_ctl(EP, EPOLL_CTL_MOD, P[0], &e));
    wait_say("after rearm", 0);
}

static void exclusive_basics(void)
{
    setup(EPOLLIN | EPOLLEXCLUSIVE);
    struct epoll_event e = {.events = EPOLLIN | EPOLLEXCLUSIVE};
    CALL("MOD with EXCLUSIVE", epoll_ctl(EP, EPOLL_CTL_MOD, P[0], &e));
    pthread_t t = spawn(write_after, NULL);
    wait_say("main: wait exclusive", 5000);
    join(t);
}

static void ctl_errors(void)
{
    setup(EPOLLIN);
    struct epoll_event e = {.events = EPOLLIN};
    CALL("ADD again", epoll_ctl(EP, EPOLL_CTL_ADD, P[0], &e));
    CALL("DEL not added", epoll_ctl(EP, EPOLL_CTL_DEL, P[1], NULL));
    CALL("MOD not added", epoll_ctl(EP, EPOLL_CTL_MOD, P[1], &e));
    CALL("ADD itself", epoll_ctl(EP, EPOLL_CTL_ADD, EP, &e));
    int f = open("/etc/hostname", O_RDONLY);
    MUST(f >= 0);
    CALL("ADD regular file", epoll_ctl(EP, EPOLL_CTL_ADD, f, &e));
    CALL("ADD closed fd", epoll_ctl(EP, EPOLL_CTL_ADD, 987, &e));
    CALL("ctl on non-epoll", epoll_ctl(P[1], EPOLL_CTL_ADD, P[0], &e));
    CALL("DEL", epoll_ctl(EP, EPOLL_CTL_DEL, P[0], NULL));
    CALL("bad op", epoll_ctl(EP, 99, P[0], &e));
}

static void wait_errors(void)
{
    setup(EPOLLIN);
    struct epoll_event out[1];
    CALL("maxevents 0", epoll_wait(EP, out, 0, 0));
    CALL("not an epoll fd", epoll_wait(P[0], out, 1, 0));
    CALL("closed fd", epoll_wait(987, out, 1, 0));
    CALL("epoll_create(0)", epoll_create(0));
    CALL("epoll_create1 bad flag", epoll_create1(1));
    say("epoll fd cloexec %d", (fcntl(EP, F_GETFD) & FD_CLOEXEC) != 0);
}

static void closed_fd_leaves_set(void)
{
    setup(EPOLLIN);
    MUST(write(P[1], "a", 1) == 1);
    close(P[0]);
    wait_say("after closing the registered fd", 50);
}

static void *close_after(void *arg)
{
    (void)arg;
    msleep(50);
    say("other: closing write end");
    close(P[1]);
    return NULL;
}

static void hup_on_pipe_close(void)
{
    setup(EPOLLIN);
    pthread_t t = spawn(close_after, NULL);
    wait_say("main: wait", -1);
    join(t);
}

static void nested_epoll(void)
{
    setup(EPOLLIN);
    int outer = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = 42};
    MUST(epoll_ctl(outer, EPOLL_CTL_ADD, EP, &e) == 0);
    pthread_t t = spawn(write_after, NULL);
    struct epoll_event out;
    CALL("main: outer wait", epoll_wait(outer, &out, 1, 5000));
    say("main: outer data %llu", (unsigned long long)out.data.u64);
    join(t);
    wait_say("inner", 0);
}

static void poll_on_epoll_fd(void)
{
    setup(EPOLLIN);
    pthread_t t = spawn(write_after, NULL);
    struct pollfd p = {EP, POLLIN, 0};
    CALL("main: poll epoll fd", poll(&p, 1, 5000));
    say("main: revents %#x", p.revents);
    join(t);
}

static void *ep_waiter(void *arg)
{
    (void)arg;
    struct epoll_event out;
    int n = epoll_wait(EP, &out, 1, 5000);
    return (void *)(long)n;
}

static void thread_waits_main_writes(void)
{
    setup(EPOLLIN);
    pthread_t t = spawn(ep_waiter, NULL);
    msleep(50);
    say("main: writing");
    MUST(write(P[1], "x", 1) == 1);
    say("waiter: epoll_wait = %ld", (long)join(t));
}

enum { MANY = 300 };

static void many_fds_one_ready(void)
{
    static int fds[MANY][2];
    EP = epoll_create1(0);
    for (int i = 0; i < MANY; i++) {
        MUST(pipe(fds[i]) == 0);
        struct epoll_event e = {.events = EPOLLIN, .data.u32 = i};
        MUST(epoll_ctl(EP, EPOLL_CTL_ADD, fds[i][0], &e) == 0);
    }
    P[1] = fds[211][1];
    pthread_t t = spawn(write_after, NULL);
    struct epoll_event out[8];
    int n = CALL("main: wait", epoll_wait(EP, out, 8, 5000));
    for (int i = 0; i < n; i++)
        say("main: ready %u", out[i].data.u32);
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

static void pwait_mask_unblocks_signal(void)
{
    MAIN = pthread_self();
    struct sigaction sa = {.sa_handler = on_usr1};
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t block, empty;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigemptyset(&empty);
    pthread_sigmask(SIG_BLOCK, &block, NULL);
    setup(EPOLLIN);
    pthread_t t = spawn(kill_main_after, NULL);
    struct epoll_event out;
    CALL("main: epoll_pwait, SIGUSR1 unblocked", epoll_pwait(EP, &out, 1, 1000, &empty));
    say("handler ran %d", (int)GOT);
    join(t);
}

static void pwait_mask_blocks_signal(void)
{
    MAIN = pthread_self();
    struct sigaction sa = {.sa_handler = on_usr1};
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    setup(EPOLLIN);
    pthread_t t = spawn(kill_main_after, NULL);
    struct epoll_event out;
    CALL("main: epoll_pwait, SIGUSR1 blocked", epoll_pwait(EP, &out, 1, 200, &block));
    join(t);
    say("handler ran after %d", (int)GOT);
}

static void wait_eintr_even_with_restart(void)
{
    MAIN = pthread_self();
    struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_RESTART};
    sigaction(SIGUSR1, &sa, NULL);
    setup(EPOLLIN);
    pthread_t t = spawn(kill_main_after, NULL);
    struct epoll_event out;
    CALL("main: epoll_wait", epoll_wait(EP, &out, 1, 5000));
    say("handler ran %d", (int)GOT);
    join(t);
}

static void pwait2_timespec(void)
{
    setup(EPOLLIN);
    struct epoll_event out;
    struct timespec hundred = {0, 100000000};
    long long t0 = now_ms();
    CALL("epoll_pwait2 100ms", epoll_pwait2(EP, &out, 1, &hundred, NULL));
    say("took ~100ms %s", took(t0, 90, 2000));
    pthread_t t = spawn(write_after, NULL);
    CALL("main: epoll_pwait2 NULL", epoll_pwait2(EP, &out, 1, NULL, NULL));
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

static void accept_loop_nonblocking_listener(void)
{
    int port;
    int l = tcp_listener(&port);
    MUST(fcntl(l, F_SETFL, O_NONBLOCK) == 0);
    EP = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN | EPOLLET};
    MUST(epoll_ctl(EP, EPOLL_CTL_ADD, l, &e) == 0);
    pthread_t t = spawn(connect_after, (void *)(long)port);
    struct epoll_event out;
    CALL("main: wait", epoll_wait(EP, &out, 1, 5000));
    int n = 0;
    for (;;) {
        int s = accept(l, NULL, NULL);
        if (s < 0) {
            say("main: accepted %d, then %s", n, ename(errno));
            break;
        }
        say("main: accepted flags %s", flags_of(s));
        n++;
    }
    close((int)(long)join(t));
}

static void pollout_and_in_socketpair(void)
{
    int sp[2];
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
    EP = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.u32 = 1};
    MUST(epoll_ctl(EP, EPOLL_CTL_ADD, sp[0], &e) == 0);
    struct epoll_event out;
    CALL("wait", epoll_wait(EP, &out, 1, 0));
    say("events %#x", out.events);
    shutdown(sp[1], SHUT_WR);
    CALL("wait after peer SHUT_WR", epoll_wait(EP, &out, 1, 0));
    say("events %#x", out.events);
}

DIFF_MAIN(S(timeout_zero_and_finite), S(timeout_infinite_thread_writes),
          S(level_triggered_repeats), S(edge_triggered_once), S(oneshot_then_rearm),
          S(exclusive_basics), S(ctl_errors), S(wait_errors), S(closed_fd_leaves_set),
          S(hup_on_pipe_close), S(nested_epoll), S(poll_on_epoll_fd),
          S(thread_waits_main_writes), S(many_fds_one_ready), S(pwait_mask_unblocks_signal),
          S(pwait_mask_blocks_signal), S(wait_eintr_even_with_restart), S(pwait2_timespec),
          S(accept_loop_nonblocking_listener), S(pollout_and_in_socketpair))
