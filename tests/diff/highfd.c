/* fds with high numbers (past FD_SETSIZE, past 10000): waits, timeouts, user
 * flags and close wake-ups must work as for low ones. */
#include "diff.h"
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>

enum { HIGH = 12000 };

static int SP[2];

static void raise_nofile(void)
{
    struct rlimit rl;
    MUST(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    if (rl.rlim_cur < HIGH + 100) {
        rl.rlim_cur = rl.rlim_max < HIGH + 100 ? rl.rlim_max : HIGH + 100;
        MUST(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    }
    MUST(rl.rlim_cur >= HIGH + 10);
}

/* A socket pair whose first end is moved to fd HIGH. */
static void high_pair(void)
{
    raise_nofile();
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    MUST(dup2(SP[0], HIGH) == HIGH);
    close(SP[0]);
    SP[0] = HIGH;
}

static void *send_after(void *arg)
{
    (void)arg;
    msleep(50);
    say("sender: sending");
    MUST(send(SP[1], "h", 1, 0) == 1);
    return NULL;
}

static void recv_waits_high(void)
{
    alarm(2);
    high_pair();
    pthread_t t = spawn(send_after, NULL);
    char c = 0;
    CALL("main: recv on fd 12000", recv(SP[0], &c, 1, 0));
    join(t);
}

static void timeout_high(void)
{
    alarm(2);
    high_pair();
    struct timeval tv = {0, 100000};
    MUST(setsockopt(SP[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    char c;
    long long t0 = now_ms();
    CALL("recv with timeout on fd 12000", recv(SP[0], &c, 1, 0));
    say("took ~100ms %s", took(t0, 80, 1500));
}

static void nonblock_high(void)
{
    alarm(2);
    high_pair();
    MUST(fcntl(SP[0], F_SETFL, O_NONBLOCK) == 0);
    say("flags %s", flags_of(SP[0]));
    char c;
    CALL("recv on non-blocking fd 12000", recv(SP[0], &c, 1, 0));
}

static void poll_high(void)
{
    alarm(2);
    high_pair();
    pthread_t t = spawn(send_after, NULL);
    struct pollfd p = {SP[0], POLLIN, 0};
    CALL("main: poll fd 12000", poll(&p, 1, 1000));
    say("main: revents %#x", p.revents);
    join(t);
}

static void epoll_high(void)
{
    alarm(2);
    high_pair();
    int ep = epoll_create1(0);
    MUST(dup2(ep, HIGH + 1) == HIGH + 1);
    close(ep);
    struct epoll_event e = {.events = EPOLLIN, .data.u32 = 77};
    CALL("epoll_ctl", epoll_ctl(HIGH + 1, EPOLL_CTL_ADD, SP[0], &e));
    pthread_t t = spawn(send_after, NULL);
    CALL("main: epoll_wait on epoll fd 12001", epoll_wait(HIGH + 1, &e, 1, 1000));
    say("main: data %u", e.data.u32);
    join(t);
}

static void *recv_result(void *arg)
{
    (void)arg;
    char c;
    long r = recv(SP[0], &c, 1, 0);
    return (void *)(r < 0 ? -(long)errno : r);
}

static void shutdown_high_while_waiting(void)
{
    alarm(2);
    signal(SIGPIPE, SIG_IGN);
    high_pair();
    pthread_t t = spawn(recv_result, NULL);
    msleep(50);
    say("main: shutting down fd 12000, then closing it");
    shutdown(SP[0], SHUT_RD);
    msleep(20);
    close(SP[0]);
    long r = (long)join(t);
    say("reader: %s", r < 0 ? ename((int)-r) : r == 0 ? "EOF" : "data");
}

static void accept_on_high_listener(void)
{
    alarm(2);
    raise_nofile();
    int port;
    int l = tcp_listener(&port);
    MUST(dup2(l, HIGH + 2) == HIGH + 2);
    close(l);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(port);
    MUST(connect(c, (struct sockaddr *)&a, sizeof a) == 0);
    int s = accept(HIGH + 2, NULL, NULL);
    CALL("accept on fd 12002 gave a socket", s >= 0);
    MUST(send(c, "q", 1, 0) == 1);
    char ch = 0;
    CALL("recv", recv(s, &ch, 1, 0));
}

enum { N = 20 };
static int PIPES[N][2];

static void *read_pipe(void *a)
{
    char c = 0;
    long r = read(PIPES[(long)a][0], &c, 1);
    return (void *)(r == 1 ? (long)c : -1L);
}

static void many_high_pipes_threads(void)
{
    alarm(3);
    raise_nofile();
    int(*fds)[2] = PIPES;
    for (int i = 0; i < N; i++) {
        int p[2];
        MUST(pipe(p) == 0);
        fds[i][0] = dup2(p[0], HIGH - 100 + 2 * i);
        fds[i][1] = dup2(p[1], HIGH - 99 + 2 * i);
        MUST(fds[i][0] >= 0 && fds[i][1] >= 0);
        close(p[0]);
        close(p[1]);
    }
    pthread_t t[N];
    for (long i = 0; i < N; i++)
        t[i] = spawn(read_pipe, (void *)i);
    msleep(30);
    for (int i = 0; i < N; i++)
        MUST(write(fds[i][1], "p", 1) == 1);
    int ok = 0;
    for (int i = 0; i < N; i++)
        ok += (long)join(t[i]) == 'p';
    say("readers on high pipes done: %d", ok);
}

DIFF_MAIN(S(recv_waits_high), S(timeout_high), S(nonblock_high), S(poll_high), S(epoll_high),
          S(shutdown_high_while_waiting), S(accept_on_high_listener), S(many_high_pipes_threads))
