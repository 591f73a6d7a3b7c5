/* dup, dup2, dup3, F_DUPFD: shared flags and timeouts, and close or dup2
 * over an fd that another thread waits on. */
#include "diff.h"
#include <poll.h>
#include <sys/epoll.h>

static int P[2], Q[2];

static void dup_shares_nonblock(void)
{
    alarm(2); /* a read that should say EAGAIN must not hang the suite */
    MUST(pipe(P) == 0);
    int d = dup(P[0]);
    MUST(fcntl(d, F_SETFL, O_NONBLOCK) == 0);
    say("original %s, dup %s", flags_of(P[0]), flags_of(d));
    char c;
    CALL("read original", read(P[0], &c, 1));
    MUST(fcntl(P[0], F_SETFL, 0) == 0);
    say("after clearing on original: dup %s", flags_of(d));
}

static void dup2_dup3_same_fd(void)
{
    MUST(pipe(P) == 0);
    CALL("dup2(fd, fd) is fd", dup2(P[0], P[0]) == P[0]);
    CALL("dup3(fd, fd)", dup3(P[0], P[0], 0));
    CALL("dup3 bad flags", dup3(P[0], P[1] + 10, 12345));
    CALL("dup2 closed source", dup2(777, P[1] + 10));
    CALL("dup closed", dup(777));
    CALL("dup2 target too big", dup2(P[0], 1 << 30));
}

static void cloexec_variants(void)
{
    MUST(pipe(P) == 0);
    int a = dup(P[0]);
    int b = dup3(P[0], 200, O_CLOEXEC);
    int c = fcntl(P[0], F_DUPFD_CLOEXEC, 300);
    int d = fcntl(P[0], F_DUPFD, 300);
    say("dup %d, dup3 O_CLOEXEC %d (at 200: %d), F_DUPFD_CLOEXEC %d (>= 300: %d), F_DUPFD %d "
        "(>= 300: %d)",
        fcntl(a, F_GETFD), fcntl(b, F_GETFD), b == 200, fcntl(c, F_GETFD), c >= 300,
        fcntl(d, F_GETFD), d >= 300);
    CALL("F_SETFD", fcntl(a, F_SETFD, FD_CLOEXEC));
    say("now %d", fcntl(a, F_GETFD));
}

static void *read_result(void *arg)
{
    int fd = (int)(long)arg;
    char c = 0;
    errno = 0;
    ssize_t r = read(fd, &c, 1);
    static char out[64];
    snprintf(out, sizeof out, "read = %zd %s %c", r, r < 0 ? ename(errno) : "", r > 0 ? c : '-');
    return out;
}

static void close_while_other_thread_reads(void)
{
    signal(SIGPIPE, SIG_IGN);
    MUST(pipe(P) == 0);
    pthread_t t = spawn(read_result, (void *)(long)P[0]);
    msleep(50);
    say("main: closing the read end");
    close(P[0]);
    msleep(50);
    say("main: writing");
    CALL("main: write", write(P[1], "x", 1));
    close(P[1]);
    say("reader: %s", (char *)join(t));
}

static void dup2_over_waited_fd(void)
{
    signal(SIGPIPE, SIG_IGN);
    MUST(pipe(P) == 0 && pipe(Q) == 0);
    pthread_t t = spawn(read_result, (void *)(long)P[0]);
    msleep(50);
    say("main: dup2 over the read end");
    MUST(dup2(Q[0], P[0]) == P[0]);
    msleep(50);
    say("main: writing to the old pipe");
    CALL("main: write", write(P[1], "o", 1));
    close(P[1]);
    MUST(write(Q[1], "n", 1) == 1);
    say("reader: %s", (char *)join(t));
    char c = 0;
    CALL("main: read the fd now", read(P[0], &c, 1));
    say("main: got %c", c);
}

static void *poll_result(void *arg)
{
    int fd = (int)(long)arg;
    struct pollfd p = {fd, POLLIN, 0};
    int r = poll(&p, 1, 300);
    static char out[64];
    snprintf(out, sizeof out, "poll = %d %s revents %#x", r, r < 0 ? ename(errno) : "",
             p.revents);
    return out;
}

static void close_while_other_thread_polls(void)
{
    signal(SIGPIPE, SIG_IGN);
    MUST(pipe(P) == 0);
    pthread_t t = spawn(poll_result, (void *)(long)P[0]);
    msleep(50);
    say("main: closing the polled fd");
    close(P[0]);
    msleep(50);
    say("main: writing");
    CALL("main: write", write(P[1], "x", 1));
    say("poller: %s", (char *)join(t));
}

static int PORT;

static void *accept_result(void *arg)
{
    int l = (int)(long)arg;
    int a = accept(l, NULL, NULL);
    static char out[64];
    snprintf(out, sizeof out, "accept %s", a >= 0 ? "gave a socket" : ename(errno));
    return out;
}

static void close_listener_while_accepting(void)
{
    int l = tcp_listener(&PORT);
    pthread_t t = spawn(accept_result, (void *)(long)l);
    msleep(50);
    say("main: closing the listener");
    close(l);
    msleep(50);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(PORT);
    CALL("main: connect", connect(s, (struct sockaddr *)&a, sizeof a));
    say("acceptor: %s", (char *)join(t));
}

static void *epoll_result(void *arg)
{
    int ep = (int)(long)arg;
    struct epoll_event e;
    int r = epoll_wait(ep, &e, 1, 300);
    static char out[64];
    snprintf(out, sizeof out, "epoll_wait = %d %s", r, r < 0 ? ename(errno) : "");
    return out;
}

static void close_epoll_while_waiting(void)
{
    MUST(pipe(P) == 0);
    int ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN};
    MUST(epoll_ctl(ep, EPOLL_CTL_ADD, P[0], &e) == 0);
    pthread_t t = spawn(epoll_result, (void *)(long)ep);
    msleep(50);
    say("main: closing the epoll fd");
    close(ep);
    msleep(50);
    say("main: writing");
    write(P[1], "x", 1);
    say("waiter: %s", (char *)join(t));
}

static void *read_byte(void *arg)
{
    int fd = (int)(long)arg;
    char c = 0;
    ssize_t r = read(fd, &c, 1);
    return (void *)(long)(r == 1 ? c : -1);
}

static void two_threads_read_fd_and_dup(void)
{
    MUST(pipe(P) == 0);
    int d = dup(P[0]);
    pthread_t a = spawn(read_byte, (void *)(long)P[0]);
    pthread_t b = spawn(read_byte, (void *)(long)d);
    msleep(50);
    say("main: writing two bytes");
    MUST(write(P[1], "ab", 2) == 2);
    msleep(20);
    MUST(write(P[1], "cd", 2) == 2);
    long ra = (long)join(a), rb = (long)join(b);
    say("both got a byte: %d", ra > 0 && rb > 0);
}

static void dup_keeps_socket_timeout(void)
{
    int sp[2];
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
    struct timeval tv = {0, 100000};
    MUST(setsockopt(sp[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    int d = dup(sp[0]);
    char c;
    long long t0 = now_ms();
    CALL("recv on dup", recv(d, &c, 1, 0));
    say("took ~100ms %s", took(t0, 80, 2000));
    close(sp[0]);
    t0 = now_ms();
    CALL("recv on dup after closing the original", recv(d, &c, 1, 0));
    say("took ~100ms %s", took(t0, 80, 2000));
}

static void dup_keeps_user_nonblock(void)
{
    int sp[2];
    MUST(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sp) == 0);
    int d = dup(sp[0]);
    int d2 = dup2(sp[0], 150);
    char c;
    CALL("recv dup", recv(d, &c, 1, 0));
    CALL("read dup2", read(d2, &c, 1));
    say("flags %s %s", flags_of(d), flags_of(d2));
}

static void *send_after(void *arg)
{
    int fd = (int)(long)arg;
    msleep(50);
    say("sender: sending");
    MUST(send(fd, "s", 1, 0) == 1);
    return NULL;
}

static void dup2_socket_over_timed_socket(void)
{
    int a[2], b[2];
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, a) == 0);
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, b) == 0);
    struct timeval tv = {0, 20000};
    MUST(setsockopt(a[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    MUST(dup2(b[0], a[0]) == a[0]);
    pthread_t t = spawn(send_after, (void *)(long)b[1]);
    char c = 0;
    CALL("main: recv on the new socket (no timeout)", recv(a[0], &c, 1, 0));
    join(t);
}

static void dup_close_original_then_wait(void)
{
    int sp[2];
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
    int d = dup(sp[0]);
    close(sp[0]);
    pthread_t t = spawn(send_after, (void *)(long)sp[1]);
    char c = 0;
    CALL("main: recv on dup", recv(d, &c, 1, 0));
    join(t);
}

static void dup2_onto_stdin(void)
{
    MUST(pipe(P) == 0);
    MUST(dup2(P[0], 0) == 0);
    char c = 0;
    MUST(write(P[1], "i", 1) == 1);
    CALL("read stdin", read(0, &c, 1));
    say("got %c", c);
    close(P[1]);
    CALL("read stdin at EOF", read(0, &c, 1));
    _exit(0);
}

static void *write_then(void *arg)
{
    (void)arg;
    msleep(50);
    say("writer: writing to the reused number");
    MUST(write(Q[1], "r", 1) == 1);
    return NULL;
}

static void reused_number_no_stale_wakeup(void)
{
    MUST(pipe(P) == 0);
    int n = P[0];
    close(P[0]);
    MUST(pipe(Q) == 0);
    say("number reused %d", Q[0] == n);
    write(P[1], "x", 1);
    pthread_t t = spawn(write_then, NULL);
    char c = 0;
    CALL("main: read the new pipe", read(Q[0], &c, 1));
    say("main: got %c", c);
    join(t);
}

DIFF_MAIN(S(dup_shares_nonblock), S(dup2_dup3_same_fd), S(cloexec_variants),
          S(close_while_other_thread_reads), S(dup2_over_waited_fd),
          S(close_while_other_thread_polls), S(close_listener_while_accepting),
          S(close_epoll_while_waiting), S(two_threads_read_fd_and_dup),
          S(dup_keeps_socket_timeout), S(dup_keeps_user_nonblock),
          S(dup2_socket_over_timed_socket), S(dup_close_original_then_wait),
          S(dup2_onto_stdin), S(reused_number_no_stale_wakeup))
