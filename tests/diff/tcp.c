/* TCP over loopback: accept/connect waits, transfers bigger than the socket
 * buffers, EOF, ECONNRESET, EPIPE, timeouts, accept flags. */
#include "diff.h"
#include <sys/ioctl.h>
#include <sys/uio.h>

static int L, PORT, C, A;

static void *connect_after(void *arg)
{
    (void)arg;
    msleep(50);
    say("client: connecting");
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(PORT);
    MUST(connect(s, (struct sockaddr *)&a, sizeof a) == 0);
    MUST(send(s, "hello", 5, 0) == 5);
    close(s);
    return NULL;
}

static void accept_waits_for_client(void)
{
    L = tcp_listener(&PORT);
    pthread_t t = spawn(connect_after, NULL);
    int s = CALL("server: accept ok", accept(L, NULL, NULL) >= 0 ? 1 : -1);
    (void)s;
    join(t);
}

static void *client_hello(void *arg)
{
    (void)arg;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(PORT);
    MUST(connect(s, (struct sockaddr *)&a, sizeof a) == 0);
    MUST(send(s, "hello", 5, 0) == 5);
    char buf[16] = {0};
    ssize_t r = recv(s, buf, sizeof buf, MSG_WAITALL);
    close(s);
    return (void *)r;
}

static void accept_then_echo(void)
{
    L = tcp_listener(&PORT);
    pthread_t t = spawn(client_hello, NULL);
    int s = accept(L, NULL, NULL);
    MUST(s >= 0);
    char buf[8] = {0};
    CALL("server: recv", recv(s, buf, 5, MSG_WAITALL));
    say("server: got %s", buf);
    CALL("server: send", send(s, "HELLO", 5, 0));
    close(s);
    say("client: recv = %ld", (long)join(t));
}

static void accept4_nonblock_flags(void)
{
    L = tcp_listener(&PORT);
    pthread_t t = spawn(connect_after, NULL);
    int s = accept4(L, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    MUST(s >= 0);
    say("accepted flags %s, cloexec %d", flags_of(s), (fcntl(s, F_GETFD) & FD_CLOEXEC) != 0);
    join(t);
    int plain = -1, c = -1;
    (void)plain;
    (void)c;
    char buf[8] = {0};
    msleep(20);
    CALL("recv", recv(s, buf, 5, 0));
    say("got %s", buf);
    CALL("recv at EOF", recv(s, buf, 5, 0));
}

static void accept_plain_not_nonblock(void)
{
    int l = tcp_listener(&PORT);
    MUST(fcntl(l, F_SETFL, O_NONBLOCK) == 0);
    CALL("accept on empty nonblocking listener", accept(l, NULL, NULL));
    pthread_t t = spawn(connect_after, NULL);
    join(t);
    int s = accept(l, NULL, NULL);
    MUST(s >= 0);
    say("listener %s, accepted %s", flags_of(l), flags_of(s));
}

static void accept_timeout_rcvtimeo(void)
{
    L = tcp_listener(&PORT);
    struct timeval tv = {0, 100000};
    MUST(setsockopt(L, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    long long t0 = now_ms();
    CALL("accept", accept(L, NULL, NULL));
    say("took ~100ms: %s", took(t0, 80, 2000));
}

static void *shut_listener(void *arg)
{
    (void)arg;
    msleep(50);
    say("other: shutdown(listener)");
    shutdown(L, SHUT_RDWR);
    return NULL;
}

static void shutdown_listener_wakes_accept(void)
{
    L = tcp_listener(&PORT);
    pthread_t t = spawn(shut_listener, NULL);
    CALL("main: accept", accept(L, NULL, NULL));
    join(t);
}

static void *big_reader(void *arg)
{
    int fd = (int)(long)arg;
    char buf[7000];
    long got = 0, sum = 0;
    ssize_t r;
    while ((r = recv(fd, buf, sizeof buf, 0)) > 0) {
        for (ssize_t i = 0; i < r; i++)
            sum += (unsigned char)buf[i];
        got += r;
    }
    say("reader: got %ld sum %ld end %s", got, sum, r == 0 ? "EOF" : ename(errno));
    return NULL;
}

static char BIG[8 << 20];

static void large_send_reader_thread(void)
{
    tcp_pair(&C, &A);
    for (size_t i = 0; i < sizeof BIG; i++)
        BIG[i] = (char)(i % 253);
    pthread_t t = spawn(big_reader, (void *)(long)A);
    CALL("main: send 8 MiB", send(C, BIG, sizeof BIG, 0));
    shutdown(C, SHUT_WR);
    join(t);
}

static void large_write_small_sndbuf(void)
{
    tcp_pair(&C, &A);
    int sz = 4096;
    setsockopt(C, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    setsockopt(A, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    memset(BIG, 7, 24 << 10);
    pthread_t t = spawn(big_reader, (void *)(long)A);
    CALL("main: write 24 KiB", write(C, BIG, 24 << 10));
    close(C);
    join(t);
}

static void *both_send(void *arg)
{
    (void)arg;
    memset(BIG, 1, 2 << 20);
    long r = send(A, BIG, 2 << 20, 0);
    shutdown(A, SHUT_WR);
    char buf[65536];
    long got = 0;
    ssize_t n;
    while ((n = recv(A, buf, sizeof buf, 0)) > 0)
        got += n;
    say("server thread: sent %ld got %ld", r, got);
    return NULL;
}

static void *side_reader(void *arg)
{
    (void)arg;
    char buf[65536];
    long got = 0;
    ssize_t n;
    while ((n = recv(C, buf, sizeof buf, 0)) > 0)
        got += n;
    return (void *)got;
}

static void full_duplex_large(void)
{
    tcp_pair(&C, &A);
    pthread_t t = spawn(both_send, NULL);
    pthread_t r = spawn(side_reader, NULL);
    static char mine[2 << 20];
    memset(mine, 2, sizeof mine);
    long s = send(C, mine, sizeof mine, 0);
    shutdown(C, SHUT_WR);
    long got = (long)join(r);
    join(t);
    say("main: sent %ld got %ld", s, got);
}

static void *reset_after(void *arg)
{
    (void)arg;
    msleep(50);
    struct linger lg = {1, 0};
    setsockopt(A, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    say("peer: close with RST");
    close(A);
    return NULL;
}

static void econnreset_wakes_reader(void)
{
    tcp_pair(&C, &A);
    pthread_t t = spawn(reset_after, NULL);
    char c;
    CALL("main: recv", recv(C, &c, 1, 0));
    join(t);
    CALL("main: recv again", recv(C, &c, 1, 0));
}

static void epipe_after_reset(void)
{
    signal(SIGPIPE, SIG_IGN);
    tcp_pair(&C, &A);
    struct linger lg = {1, 0};
    setsockopt(A, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(A);
    msleep(20);
    CALL("send", send(C, "x", 1, 0));
    CALL("send again", send(C, "x", 1, 0));
}

static void sigpipe_default_after_close(void)
{
    tcp_pair(&C, &A);
    close(A);
    msleep(20);
    say("first send");
    send(C, "x", 1, 0);
    msleep(20);
    say("second send");
    send(C, "x", 1, 0);
    say("not reached");
}

static void eof_then_write_peer(void)
{
    tcp_pair(&C, &A);
    shutdown(A, SHUT_WR);
    char buf[8] = {0};
    CALL("client recv", recv(C, buf, 1, 0));
    CALL("client still sends", send(C, "half", 4, 0));
    CALL("server recv", recv(A, buf, 4, MSG_WAITALL));
    say("got %s", buf);
}

static void rcvtimeo_on_tcp(void)
{
    tcp_pair(&C, &A);
    struct timeval tv = {0, 100000}, back = {0, 0};
    socklen_t len = sizeof back;
    MUST(setsockopt(C, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    MUST(getsockopt(C, SOL_SOCKET, SO_RCVTIMEO, &back, &len) == 0);
    say("timeout back %ld.%06ld", (long)back.tv_sec, (long)back.tv_usec);
    char c;
    long long t0 = now_ms();
    CALL("recv", recv(C, &c, 1, 0));
    say("took ~100ms: %s", took(t0, 80, 2000));
    t0 = now_ms();
    CALL("recv MSG_WAITALL", recv(C, &c, 1, MSG_WAITALL));
    say("took ~100ms: %s", took(t0, 80, 2000));
}

static void sndtimeo_on_tcp(void)
{
    tcp_pair(&C, &A);
    struct timeval tv = {0, 100000};
    MUST(setsockopt(C, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0);
    memset(BIG, 3, sizeof BIG);
    long long t0 = now_ms();
    ssize_t r = send(C, BIG, sizeof BIG, 0);
    say("send 8 MiB to a peer that never reads: partial %s (errno %s), took ~100ms+: %s",
        r > 0 && r < (ssize_t)sizeof BIG ? "yes" : "no", r < 0 ? ename(errno) : "-",
        took(t0, 80, 3000));
    t0 = now_ms();
    CALL("send again", send(C, BIG, sizeof BIG, 0));
    say("took ~100ms: %s", took(t0, 80, 2000));
}

static void *slow_sender(void *arg)
{
    (void)arg;
    for (int i = 0; i < 5; i++) {
        msleep(10);
        MUST(send(A, "0123456789", 10, 0) == 10);
    }
    return NULL;
}

static void waitall_across_segments(void)
{
    tcp_pair(&C, &A);
    pthread_t t = spawn(slow_sender, NULL);
    char buf[51] = {0};
    CALL("recv MSG_WAITALL 50", recv(C, buf, 50, MSG_WAITALL));
    say("last %s", buf + 40);
    join(t);
}

static void peek_dontwait_tcp(void)
{
    tcp_pair(&C, &A);
    char buf[8] = {0};
    CALL("peek empty DONTWAIT", recv(C, buf, 4, MSG_PEEK | MSG_DONTWAIT));
    MUST(send(A, "abcd", 4, 0) == 4);
    msleep(10);
    CALL("peek", recv(C, buf, 4, MSG_PEEK));
    CALL("read", recv(C, buf, 4, 0));
    say("got %s", buf);
    int n = -1;
    CALL("FIONREAD", ioctl(C, FIONREAD, &n));
    say("left %d", n);
}

static void *server_loop(void *arg)
{
    int n = (int)(long)arg;
    for (int i = 0; i < n; i++) {
        int s = accept(L, NULL, NULL);
        MUST(s >= 0);
        char buf[4];
        MUST(recv(s, buf, 4, MSG_WAITALL) == 4);
        MUST(send(s, buf, 4, 0) == 4);
        close(s);
    }
    return NULL;
}

static void *client_n(void *arg)
{
    long id = (long)arg;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(PORT);
    MUST(connect(s, (struct sockaddr *)&a, sizeof a) == 0);
    char m[5], buf[5] = {0};
    snprintf(m, sizeof m, "c%03ld", id);
    MUST(send(s, m, 4, 0) == 4);
    ssize_t r = recv(s, buf, 4, MSG_WAITALL);
    close(s);
    return (void *)(long)(r == 4 && memcmp(m, buf, 4) == 0);
}

static void thread_per_client(void)
{
    L = tcp_listener(&PORT);
    enum { N = 20 };
    pthread_t srv = spawn(server_loop, (void *)(long)N);
    pthread_t t[N];
    for (long i = 0; i < N; i++)
        t[i] = spawn(client_n, (void *)i);
    int ok = 0;
    for (int i = 0; i < N; i++)
        ok += (int)(long)join(t[i]);
    join(srv);
    say("clients ok %d of %d", ok, N);
}

static void sockopt_roundtrip(void)
{
    tcp_pair(&C, &A);
    int one = 1, v = 0;
    socklen_t len = sizeof v;
    MUST(setsockopt(C, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
    MUST(getsockopt(C, IPPROTO_TCP, TCP_NODELAY, &v, &len) == 0);
    say("nodelay %d", v);
    len = sizeof v;
    MUST(getsockopt(C, SOL_SOCKET, SO_TYPE, &v, &len) == 0);
    say("type stream %d", v == SOCK_STREAM);
    len = sizeof v;
    CALL("SO_ERROR", getsockopt(C, SOL_SOCKET, SO_ERROR, &v, &len));
    say("error %s", ename(v));
    struct timeval tv = {1, 500000}, back;
    len = sizeof back;
    MUST(setsockopt(C, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0);
    MUST(getsockopt(C, SOL_SOCKET, SO_SNDTIMEO, &back, &len) == 0);
    say("sndtimeo %ld.%06ld", (long)back.tv_sec, (long)back.tv_usec);
}

static void readv_writev_tcp(void)
{
    tcp_pair(&C, &A);
    static char a[100000], b[100000];
    memset(a, 'a', sizeof a);
    memset(b, 'b', sizeof b);
    struct iovec w[2] = {{a, sizeof a}, {b, sizeof b}};
    pthread_t t = spawn(big_reader, (void *)(long)A);
    CALL("writev 200000", writev(C, w, 2));
    close(C);
    join(t);
}

static void recv_zero_len(void)
{
    tcp_pair(&C, &A);
    char c;
    MUST(send(A, "x", 1, 0) == 1);
    msleep(10);
    CALL("recv 0 bytes with data queued", recv(C, &c, 0, 0));
    CALL("send 0 bytes", send(C, &c, 0, 0));
}

static void getpeername_unconnected(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    CALL("getpeername", getpeername(s, (struct sockaddr *)&a, &len));
    char c;
    CALL("recv unconnected", recv(s, &c, 1, 0));
    signal(SIGPIPE, SIG_IGN);
    CALL("send unconnected", send(s, &c, 1, 0));
    CALL("accept unlistened", accept(s, NULL, NULL));
    CALL("listen", listen(s, 1));
    say("listening flags %s", flags_of(s));
}

static void *acceptor(void *arg)
{
    (void)arg;
    int s = accept(L, NULL, NULL);
    if (s < 0)
        return (void *)-1L;
    char c = 0;
    ssize_t r = recv(s, &c, 1, 0);
    close(s);
    return (void *)(long)(r == 1 ? c : -2);
}

static void accept_pool_threads(void)
{
    L = tcp_listener(&PORT);
    enum { N = 8 };
    pthread_t t[N];
    for (int i = 0; i < N; i++)
        t[i] = spawn(acceptor, NULL);
    msleep(30);
    for (int i = 0; i < N; i++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = loopback(PORT);
        MUST(connect(s, (struct sockaddr *)&a, sizeof a) == 0);
        MUST(send(s, "a", 1, 0) == 1);
        close(s);
    }
    int served = 0;
    for (int i = 0; i < N; i++)
        served += (long)join(t[i]) == 'a';
    say("each of %d acceptors served one: %d", N, served);
}

DIFF_MAIN(S(accept_waits_for_client), S(accept_then_echo), S(accept4_nonblock_flags),
          S(accept_plain_not_nonblock), S(accept_timeout_rcvtimeo),
          S(shutdown_listener_wakes_accept), S(large_send_reader_thread),
          S(large_write_small_sndbuf), S(full_duplex_large), S(econnreset_wakes_reader),
          S(epipe_after_reset), S(sigpipe_default_after_close), S(eof_then_write_peer),
          S(rcvtimeo_on_tcp), S(sndtimeo_on_tcp), S(waitall_across_segments),
          S(peek_dontwait_tcp), S(thread_per_client), S(sockopt_roundtrip),
          S(readv_writev_tcp), S(recv_zero_len), S(getpeername_unconnected),
          S(accept_pool_threads))
