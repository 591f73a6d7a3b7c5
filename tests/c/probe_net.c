/* Sockets: socketpair, TCP and UDP over 127.0.0.1, the recv/send families,
 * connect/accept, EOF, ECONNREFUSED, ECONNRESET, EPIPE, EAGAIN, timeouts, EINTR. */
#define _GNU_SOURCE
#include "probe.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>

/* A TCP socket bound to 127.0.0.1 on an ephemeral port; its address in *addr. */
static int bound_tcp(struct sockaddr_in *addr)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    MUST(s);
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    MUST(bind(s, (struct sockaddr *)addr, sizeof *addr));
    socklen_t len = sizeof *addr;
    MUST(getsockname(s, (struct sockaddr *)addr, &len));
    return s;
}

static void stream_pair(void)
{
    int sv[2];
    char buf[32];
    CHECK("socketpair", socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
    FACT("socketpair_blocking", !(fcntl(sv[0], F_GETFL) & O_NONBLOCK));
    CHECK("send", send(sv[0], "ping", 4, 0));
    memset(buf, 0, sizeof buf);
    CHECK("recv", recv(sv[1], buf, opaque(sizeof buf), 0));
    printf("recv_data: %s\n", buf);
    CHECK("sendto", sendto(sv[1], "pong", 4, 0, NULL, 0));
    memset(buf, 0, sizeof buf);
    CHECK("recvfrom", recvfrom(sv[0], buf, opaque(sizeof buf), 0, NULL, NULL));
    printf("recvfrom_data: %s\n", buf);
    CHECK("write_socket", write(sv[0], "wr", 2));
    CHECK("recv_peek", recv(sv[1], buf, opaque(sizeof buf), MSG_PEEK));
    memset(buf, 0, sizeof buf);
    CHECK("read_socket", read(sv[1], buf, opaque(sizeof buf)));
    printf("read_socket_data: %s\n", buf);

    struct iovec out[2] = {{"ab", 2}, {"cd", 2}};
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = out;
    m.msg_iovlen = 2;
    CHECK("sendmsg", sendmsg(sv[0], &m, 0));
    char a[3] = {0}, b[8] = {0};
    struct iovec in[2] = {{a, 1}, {b, 7}};
    m.msg_iov = in;
    CHECK("recvmsg", recvmsg(sv[1], &m, 0));
    printf("recvmsg_data: %s|%s flags=%d\n", a, b, m.msg_flags);
    CHECK("writev_socket", writev(sv[0], out, 2));
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    in[0].iov_len = 2;
    CHECK("readv_socket", readv(sv[1], in, 2));
    printf("readv_socket_data: %s|%s\n", a, b);

    CHECK("shutdown_wr", shutdown(sv[0], SHUT_WR));
    CHECK("recv_eof", recv(sv[1], buf, opaque(sizeof buf), 0));
    CHECK("read_eof", read(sv[1], buf, opaque(sizeof buf)));
    CHECK("send_after_shutdown", send(sv[0], "x", 1, 0));
    CHECK("close_a", close(sv[0]));
    CHECK("send_to_closed_peer", send(sv[1], "x", 1, 0));
    CHECK("write_to_closed_peer", write(sv[1], "x", 1));
    CHECK("send_nosignal_closed_peer", send(sv[1], "x", 1, MSG_NOSIGNAL));
    CHECK("close_b", close(sv[1]));
    CHECK("recv_closed_fd", recv(sv[1], buf, opaque(sizeof buf), 0));
    CHECK("send_neg_fd", send(-1, "x", 1, 0));
}

struct delayed {
    int fd;
    const char *data;
};

static void *send_later(void *arg)
{
    struct delayed *d = arg;
    usleep(50000);
    send(d->fd, d->data, strlen(d->data), 0);
    return NULL;
}

static void waitall(void)
{
    int sv[2];
    char buf[16] = {0};
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
    MUST(send(sv[0], "abc", 3, 0));
    struct delayed d = {sv[0], "def"};
    pthread_t t;
    pthread_create(&t, NULL, send_later, &d);
    CHECK("recv_waitall", recv(sv[1], buf, opaque(6), MSG_WAITALL));
    printf("recv_waitall_data: %s\n", buf);
    pthread_join(t, NULL);
    close(sv[0]);
    close(sv[1]);
}

static void nonblocking(void)
{
    int sv[2];
    char buf[16];
    CHECK("socketpair_sock_nonblock", socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv));
    FACT("sock_nonblock_getfl", fcntl(sv[0], F_GETFL) & O_NONBLOCK);
    CHECK("recv_sock_nonblock", recv(sv[0], buf, opaque(sizeof buf), 0));
    CHECK("read_sock_nonblock", read(sv[0], buf, opaque(sizeof buf)));
    close(sv[0]);
    close(sv[1]);

    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
    CHECK("recv_dontwait", recv(sv[0], buf, opaque(sizeof buf), MSG_DONTWAIT));
    struct msghdr m;
    struct iovec v = {buf, sizeof buf};
    memset(&m, 0, sizeof m);
    m.msg_iov = &v;
    m.msg_iovlen = 1;
    CHECK("recvmsg_dontwait", recvmsg(sv[0], &m, MSG_DONTWAIT));
    FACT("dontwait_left_blocking", !(fcntl(sv[0], F_GETFL) & O_NONBLOCK));

    int on = 1;
    CHECK("ioctl_fionbio", ioctl(sv[0], FIONBIO, &on));
    FACT("fionbio_getfl", fcntl(sv[0], F_GETFL) & O_NONBLOCK);
    CHECK("recv_fionbio", recv(sv[0], buf, opaque(sizeof buf), 0));
    on = 0;
    MUST(ioctl(sv[0], FIONBIO, &on));

    CHECK("fcntl_nonblock", fcntl(sv[1], F_SETFL, O_NONBLOCK));
    CHECK("recvfrom_fcntl_nonblock", recvfrom(sv[1], buf, opaque(sizeof buf), 0, NULL, NULL));

    /* Fill the send buffer of a non-blocking socket. */
    char chunk[4096];
    memset(chunk, 'f', sizeof chunk);
    long total = 0, r;
    int e = 0;
    for (int i = 0; i < 4096; i++) {
        errno = 0;
        r = send(sv[1], chunk, sizeof chunk, 0);
        if (r < 0) {
            e = errno;
            break;
        }
        total += r;
    }
    FACT("send_buffer_filled", total > 0);
    printf("send_full: errno=%s\n", errname(e));
    close(sv[0]);
    close(sv[1]);
}

static void timeouts(void)
{
    int sv[2];
    char buf[16];
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
    struct timeval tv = {0, 100000};
    CHECK("setsockopt_rcvtimeo", setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    struct timeval got = {0, 0};
    socklen_t len = sizeof got;
    CHECK("getsockopt_rcvtimeo", getsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &got, &len));
    printf("rcvtimeo_value: %ld.%06ld\n", (long)got.tv_sec, (long)got.tv_usec);
    double start = now_ms();
    CHECK("recv_rcvtimeo", recv(sv[0], buf, opaque(sizeof buf), 0));
    ELAPSED_WITHIN("recv_rcvtimeo_elapsed_ok", start, 90, 5000);
    start = now_ms();
    CHECK("read_rcvtimeo", read(sv[0], buf, opaque(sizeof buf)));
    ELAPSED_WITHIN("read_rcvtimeo_elapsed_ok", start, 90, 5000);
    CHECK("setsockopt_rcvtimeo_short", setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, 4));
    struct timeval bad = {0, 1000000};
    CHECK("setsockopt_rcvtimeo_bad_usec", setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &bad, sizeof bad));
    /* Linux takes a negative timeout as "do not wait at all". */
    struct timeval neg = {-1, 999999};
    CHECK("setsockopt_rcvtimeo_negative", setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &neg, sizeof neg));
    start = now_ms();
    CHECK("recv_negative_rcvtimeo", recv(sv[0], buf, opaque(sizeof buf), 0));
    ELAPSED_WITHIN("recv_negative_rcvtimeo_at_once", start, 0, 1000);
    struct timeval huge = {LONG_MAX, 999999};
    CHECK("setsockopt_sndtimeo_huge", setsockopt(sv[0], SOL_SOCKET, SO_SNDTIMEO, &huge, sizeof huge));
    CHECK("send_huge_sndtimeo", send(sv[0], "h", 1, 0));
    CHECK("setsockopt_rcvtimeo_huge", setsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &huge, sizeof huge));
    CHECK("recv_huge_rcvtimeo", recv(sv[1], buf, opaque(sizeof buf), 0));
    struct timeval zero = {0, 0};
    CHECK("setsockopt_rcvtimeo_zero", setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &zero, sizeof zero));

    /* SO_SNDTIMEO: a blocking send into a full buffer gives up. */
    CHECK("setsockopt_sndtimeo", setsockopt(sv[1], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv));
    char chunk[4096];
    memset(chunk, 's', sizeof chunk);
    for (int size = sizeof chunk; size >= 1; size /= 8) {
        for (int i = 0; i < 4096 && send(sv[1], chunk, size, MSG_DONTWAIT) > 0; i++) {
        }
    }
    start = now_ms();
    CHECK("send_sndtimeo", send(sv[1], chunk, 1, 0));
    ELAPSED_WITHIN("send_sndtimeo_elapsed_ok", start, 90, 5000);
    close(sv[0]);
    close(sv[1]);
}

static void interrupted(void)
{
    int sv[2];
    char buf[16] = {0};
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
    arm_alarm(50, 0, -1);
    CHECK("recv_eintr", recv(sv[0], buf, opaque(sizeof buf), 0));
    printf("recv_eintr_alarms: %d\n", (int)alarms);
    arm_alarm(50, 1, sv[1]);
    CHECK("recv_sa_restart", recv(sv[0], buf, opaque(sizeof buf), 0));
    printf("recv_sa_restart_data: %s\n", buf);

    /* SO_RCVTIMEO makes a socket call non-restartable, as the kernel documents. */
    struct timeval tv = {5, 0};
    MUST(setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    arm_alarm(50, 1, -1);
    CHECK("recv_timeo_sa_restart_eintr", recv(sv[0], buf, opaque(sizeof buf), 0));
    close(sv[0]);
    close(sv[1]);
    disarm_alarm();
}

static void tcp(void)
{
    struct sockaddr_in addr, peer;
    char buf[32];
    int l = bound_tcp(&addr);
    CHECK("listen", listen(l, 16));

    int c = socket(AF_INET, SOCK_STREAM, 0);
    CHECK("connect", connect(c, (struct sockaddr *)&addr, sizeof addr));
    CHECK("connect_again", connect(c, (struct sockaddr *)&addr, sizeof addr));
    socklen_t plen = sizeof peer;
    int s = accept(l, (struct sockaddr *)&peer, &plen);
    FACT("accept_ok", s >= 0);
    FACT("accept_peer_is_loopback", plen == sizeof peer && peer.sin_addr.s_addr == htonl(INADDR_LOOPBACK));
    FACT("accepted_blocking", !(fcntl(s, F_GETFL) & O_NONBLOCK));
    CHECK("tcp_send", send(c, "hello tcp", 9, 0));
    memset(buf, 0, sizeof buf);
    CHECK("tcp_recv_waitall", recv(s, buf, opaque(9), MSG_WAITALL));
    printf("tcp_data: %s\n", buf);

    /* The server closes with unread data: the kernel resets the connection. */
    CHECK("tcp_send_unread", send(c, "x", 1, 0));
    usleep(20000);
    CHECK("tcp_close_unread", close(s));
    CHECK("tcp_recv_reset", recv(c, buf, opaque(sizeof buf), 0));
    CHECK("tcp_send_after_reset", send(c, "x", 1, 0));
    close(c);

    /* accept4 with SOCK_NONBLOCK; the listener's own mode is not inherited. */
    c = socket(AF_INET, SOCK_STREAM, 0);
    MUST(connect(c, (struct sockaddr *)&addr, sizeof addr));
    s = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    FACT("accept4_ok", s >= 0);
    FACT("accept4_nonblock", fcntl(s, F_GETFL) & O_NONBLOCK);
    FACT("accept4_cloexec", fcntl(s, F_GETFD) & FD_CLOEXEC);
    CHECK("accept4_recv_empty", recv(s, buf, opaque(sizeof buf), 0));
    CHECK("tcp_shutdown_client", shutdown(c, SHUT_WR));
    struct pollfd p = {s, POLLIN, 0};
    CHECK("poll_accepted_eof", poll(&p, 1, 5000));
    CHECK("tcp_recv_eof", recv(s, buf, opaque(sizeof buf), 0));
    close(s);
    close(c);

    CHECK("accept4_bad_flags", accept4(l, NULL, NULL, 0x7fff0000));
    MUST(fcntl(l, F_SETFL, O_NONBLOCK));
    CHECK("accept_nonblock_empty", accept(l, NULL, NULL));
    CHECK("accept4_nonblock_empty", accept4(l, NULL, NULL, 0));

    /* Non-blocking connect: EINPROGRESS, then writable with SO_ERROR 0. */
    c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    CHECK("connect_nonblock", connect(c, (struct sockaddr *)&addr, sizeof addr));
    struct pollfd w = {c, POLLOUT, 0};
    CHECK("poll_connect", poll(&w, 1, 5000));
    int err = -1;
    socklen_t elen = sizeof err;
    CHECK("getsockopt_so_error", getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &elen));
    printf("so_error: %s\n", errname(err));
    close(c);
    close(l);

    /* A bound port that does not listen refuses connections. */
    int closed = bound_tcp(&addr);
    c = socket(AF_INET, SOCK_STREAM, 0);
    CHECK("connect_refused", connect(c, (struct sockaddr *)&addr, sizeof addr));
    close(c);
    c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    CHECK("connect_refused_nonblock", connect(c, (struct sockaddr *)&addr, sizeof addr));
    w.fd = c;
    CHECK("poll_refused", poll(&w, 1, 5000));
    err = -1;
    MUST(getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &elen));
    printf("so_error_refused: %s\n", errname(err));
    close(c);
    close(closed);

    struct sockaddr_un un;
    memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    strcpy(un.sun_path, "/nonexistent/patchall-probe.sock");
    c = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK("connect_unix_missing", connect(c, (struct sockaddr *)&un, sizeof un));
    close(c);
    CHECK("connect_neg_fd", connect(-1, (struct sockaddr *)&addr, sizeof addr));
    int p2[2];
    MUST(pipe(p2));
    CHECK("connect_not_socket", connect(p2[0], (struct sockaddr *)&addr, sizeof addr));
    CHECK("recv_not_socket", recv(p2[0], buf, opaque(sizeof buf), 0));
    CHECK("accept_not_socket", accept(p2[0], NULL, NULL));
    close(p2[0]);
    close(p2[1]);
    CHECK("socket_bad_domain", socket(12345, SOCK_STREAM, 0));
    CHECK("socketpair_inet", socketpair(AF_INET, SOCK_STREAM, 0, p2));
}

static void udp(void)
{
    struct sockaddr_in addr;
    int r = socket(AF_INET, SOCK_DGRAM, 0);
    MUST(r);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    MUST(bind(r, (struct sockaddr *)&addr, sizeof addr));
    socklen_t len = sizeof addr;
    MUST(getsockname(r, (struct sockaddr *)&addr, &len));
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    MUST(s);
    MUST(connect(s, (struct sockaddr *)&addr, sizeof addr));

    struct iovec v[2] = {{"one", 3}, {"three", 5}};
    struct mmsghdr out[2];
    memset(out, 0, sizeof out);
    out[0].msg_hdr.msg_iov = &v[0];
    out[0].msg_hdr.msg_iovlen = 1;
    out[1].msg_hdr.msg_iov = &v[1];
    out[1].msg_hdr.msg_iovlen = 1;
    CHECK("sendmmsg", sendmmsg(s, out, 2, 0));

    char b0[16] = {0}, b1[16] = {0};
    struct iovec iv[2] = {{b0, sizeof b0}, {b1, sizeof b1}};
    struct mmsghdr in[2];
    memset(in, 0, sizeof in);
    in[0].msg_hdr.msg_iov = &iv[0];
    in[0].msg_hdr.msg_iovlen = 1;
    in[1].msg_hdr.msg_iov = &iv[1];
    in[1].msg_hdr.msg_iovlen = 1;
    CHECK("recvmmsg", recvmmsg(r, in, 2, 0, NULL));
    printf("recvmmsg_data: %s(%u) %s(%u)\n", b0, in[0].msg_len, b1, in[1].msg_len);
    CHECK("recvmmsg_dontwait_empty", recvmmsg(r, in, 2, MSG_DONTWAIT, NULL));
    CHECK("send_udp", send(s, "dgram", 5, 0));
    struct timespec ts = {0, 50000000};
    CHECK("recvmmsg_waitforone", recvmmsg(r, in, 2, MSG_WAITFORONE, &ts));
    CHECK("recvfrom_dontwait_empty", recvfrom(r, b0, opaque(sizeof b0), MSG_DONTWAIT, NULL, NULL));
    CHECK("recvmmsg_bad_fd", recvmmsg(-1, in, 2, 0, NULL));
    CHECK("sendmmsg_bad_fd", sendmmsg(-1, out, 2, 0));
    close(r);
    close(s);
}

/* Fortify: receive more than the buffer holds; __recv_chk must abort. */
static void overflow(void)
{
    int sv[2];
    char small[4];
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
    MUST(send(sv[0], "0123456789", 10, 0));
    CHECK("recv_overflow", recv(sv[1], small, opaque(8), 0));
}

int main(int argc, char **argv)
{
    probe_start();
    if (overflow_requested(argc, argv)) {
        overflow();
        return 0;
    }
    stream_pair();
    waitall();
    nonblocking();
    timeouts();
    interrupted();
    tcp();
    udp();
    printf("done\n");
    return 0;
}
