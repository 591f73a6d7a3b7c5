/* shutdown(2) by one thread of a socket another thread waits on (reading or
 * writing), of either end; and listener timeouts inherited by accept. */
#include "diff.h"

static int SP[2];
static int C, A;

static void *shut_after(void *arg)
{
    long how_fd = (long)arg;
    int how = (int)(how_fd & 3), fd = (int)(how_fd >> 2);
    msleep(50);
    say("other: shutdown(%s)", how == SHUT_RD ? "SHUT_RD" : how == SHUT_WR ? "SHUT_WR" : "SHUT_RDWR");
    shutdown(fd, how);
    return NULL;
}

static pthread_t shut_later(int fd, int how)
{
    return spawn(shut_after, (void *)(long)((long)fd << 2 | how));
}

static void fill(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    MUST(fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0);
    char buf[4096] = {0};
    /* Until a pause frees no room: loopback TCP moves queued data to the
     * peer's receive buffer a little later. */
    for (int round = 0; round < 50; round++) {
        long sent = 0;
        while (send(fd, buf, sizeof buf, 0) > 0)
            sent++;
        if (round > 0 && sent == 0)
            break;
        msleep(10);
    }
    MUST(fcntl(fd, F_SETFL, fl) == 0);
}

static void *close_peer_after(void *arg)
{
    (void)arg;
    msleep(50);
    say("other: closing the peer");
    close(SP[1]);
    return NULL;
}

static void *reset_peer_after(void *arg)
{
    (void)arg;
    msleep(50);
    say("other: resetting the peer");
    close(A);
    return NULL;
}

static void *recv_one(void *arg)
{
    (void)arg;
    char c;
    return (void *)recv(SP[0], &c, 1, 0);
}

static void unix_own_shut_rd_wakes_reader(void)
{
    alarm(2);
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    pthread_t t = shut_later(SP[0], SHUT_RD);
    char c;
    CALL("main: recv", recv(SP[0], &c, 1, 0));
    join(t);
}

static void tcp_own_shut_rd_wakes_reader(void)
{
    alarm(2);
    tcp_pair(&C, &A);
    pthread_t t = shut_later(C, SHUT_RD);
    char c;
    CALL("main: recv", recv(C, &c, 1, 0));
    join(t);
}

static void unix_own_shut_wr_wakes_writer(void)
{
    alarm(2);
    signal(SIGPIPE, SIG_IGN);
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    fill(SP[0]);
    pthread_t t = shut_later(SP[0], SHUT_WR);
    CALL("main: send into a full socket", send(SP[0], "x", 1, 0));
    join(t);
}

static void tcp_own_shut_wr_wakes_writer(void)
{
    alarm(2);
    signal(SIGPIPE, SIG_IGN);
    tcp_pair(&C, &A);
    fill(C);
    pthread_t t = shut_later(C, SHUT_WR);
    CALL("main: send into a full socket", send(C, "x", 1, 0));
    join(t);
}

static void unix_peer_shut_rd_wakes_writer(void)
{
    alarm(2);
    signal(SIGPIPE, SIG_IGN);
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    fill(SP[0]);
    pthread_t t = shut_later(SP[1], SHUT_RD);
    CALL("main: send into a full socket", send(SP[0], "x", 1, 0));
    join(t);
}

static void unix_peer_close_wakes_writer(void)
{
    alarm(2);
    signal(SIGPIPE, SIG_IGN);
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    fill(SP[0]);
    pthread_t t = spawn(close_peer_after, NULL);
    CALL("main: send into a full socket", send(SP[0], "x", 1, 0));
    join(t);
}

static void tcp_peer_rst_wakes_writer(void)
{
    alarm(2);
    signal(SIGPIPE, SIG_IGN);
    tcp_pair(&C, &A);
    fill(C);
    struct linger lg = {1, 0};
    setsockopt(A, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    pthread_t t = spawn(reset_peer_after, NULL);
    CALL("main: send into a full socket", send(C, "x", 1, 0));
    join(t);
}

static void shut_rdwr_wakes_both(void)
{
    alarm(2);
    signal(SIGPIPE, SIG_IGN);
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    fill(SP[0]);
    pthread_t r = spawn(recv_one, NULL);
    pthread_t t = shut_later(SP[0], SHUT_RDWR);
    CALL("main: send into a full socket", send(SP[0], "x", 1, 0));
    join(t);
    say("reader: recv = %ld", (long)join(r));
}

static void accepted_inherits_listener_timeouts(void)
{
    int port;
    int l = tcp_listener(&port);
    struct timeval tv = {0, 100000};
    MUST(setsockopt(l, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(port);
    MUST(connect(c, (struct sockaddr *)&a, sizeof a) == 0);
    int s = accept(l, NULL, NULL);
    MUST(s >= 0);
    struct timeval back;
    socklen_t len = sizeof back;
    MUST(getsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &back, &len) == 0);
    say("accepted SO_RCVTIMEO %ld.%06ld", (long)back.tv_sec, (long)back.tv_usec);
    char ch;
    long long t0 = now_ms();
    CALL("recv on accepted", recv(s, &ch, 1, 0));
    say("took ~100ms %s", took(t0, 80, 2000));
}

static void shutdown_errors(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    CALL("shutdown unconnected", shutdown(s, SHUT_RDWR));
    CALL("shutdown bad how", shutdown(s, 7));
    int p[2];
    MUST(pipe(p) == 0);
    CALL("shutdown a pipe", shutdown(p[0], SHUT_RD));
    CALL("shutdown closed", shutdown(999, SHUT_RD));
}

DIFF_MAIN(S(unix_own_shut_rd_wakes_reader), S(tcp_own_shut_rd_wakes_reader),
          S(unix_own_shut_wr_wakes_writer), S(tcp_own_shut_wr_wakes_writer),
          S(unix_peer_shut_rd_wakes_writer), S(unix_peer_close_wakes_writer),
          S(tcp_peer_rst_wakes_writer), S(shut_rdwr_wakes_both),
          S(accepted_inherits_listener_timeouts), S(shutdown_errors))
