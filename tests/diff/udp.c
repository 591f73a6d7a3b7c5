/* UDP over loopback: datagram waits woken by another thread, timeouts,
 * truncation, ICMP refusals on connected sockets, batches. */
#include "diff.h"
#include <poll.h>
#include <sys/uio.h>

static int R, W, RPORT;

static void udp_setup(void)
{
    R = socket(AF_INET, SOCK_DGRAM, 0);
    W = socket(AF_INET, SOCK_DGRAM, 0);
    MUST(R >= 0 && W >= 0);
    struct sockaddr_in a = loopback(0);
    MUST(bind(R, (struct sockaddr *)&a, sizeof a) == 0);
    socklen_t len = sizeof a;
    MUST(getsockname(R, (struct sockaddr *)&a, &len) == 0);
    RPORT = ntohs(a.sin_port);
}

static void send_to_r(const char *m)
{
    struct sockaddr_in a = loopback(RPORT);
    MUST(sendto(W, m, strlen(m), 0, (struct sockaddr *)&a, sizeof a) == (ssize_t)strlen(m));
}

static void *send_after(void *arg)
{
    msleep(50);
    say("sender: sending");
    send_to_r(arg);
    return NULL;
}

static void recvfrom_waits_for_datagram(void)
{
    udp_setup();
    pthread_t t = spawn(send_after, "dgram");
    char buf[16] = {0};
    struct sockaddr_in from;
    socklen_t len = sizeof from;
    CALL("main: recvfrom", recvfrom(R, buf, sizeof buf, 0, (struct sockaddr *)&from, &len));
    say("main: got %s from loopback %d", buf, from.sin_addr.s_addr == htonl(INADDR_LOOPBACK));
    join(t);
}

static void rcvtimeo_expires(void)
{
    udp_setup();
    struct timeval tv = {0, 100000};
    MUST(setsockopt(R, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    char c;
    long long t0 = now_ms();
    CALL("recv", recv(R, &c, 1, 0));
    say("took ~100ms %s", took(t0, 80, 2000));
    t0 = now_ms();
    struct iovec v = {&c, 1};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
    CALL("recvmsg", recvmsg(R, &m, 0));
    say("took ~100ms %s", took(t0, 80, 2000));
}

static void dontwait_and_peek(void)
{
    udp_setup();
    char buf[16] = {0};
    CALL("recv DONTWAIT empty", recv(R, buf, sizeof buf, MSG_DONTWAIT));
    send_to_r("peeky");
    msleep(10);
    CALL("recv PEEK", recv(R, buf, sizeof buf, MSG_PEEK));
    CALL("recv", recv(R, buf, sizeof buf, 0));
    say("got %s", buf);
    CALL("recv DONTWAIT empty again", recv(R, buf, sizeof buf, MSG_DONTWAIT));
}

static void truncation(void)
{
    udp_setup();
    send_to_r("0123456789");
    send_to_r("abcdefghij");
    char buf[16] = {0};
    CALL("recv 4 of 10", recv(R, buf, 4, 0));
    say("got %s", buf);
    CALL("recv MSG_TRUNC 4 of 10 (real length)", recv(R, buf, 4, MSG_TRUNC));
    send_to_r("xyz");
    char small[2];
    struct iovec v = {small, 2};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
    CALL("recvmsg 2 of 3", recvmsg(R, &m, 0));
    say("MSG_TRUNC in flags %d", (m.msg_flags & MSG_TRUNC) != 0);
}

static void zero_length_datagram(void)
{
    udp_setup();
    pthread_t t = spawn(send_after, "");
    char buf[4];
    CALL("main: recv empty datagram", recv(R, buf, sizeof buf, 0));
    join(t);
}

static void connected_refused(void)
{
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    int port = closed_port();
    struct sockaddr_in a = loopback(port);
    /* A UDP port nothing listens on: bind and close one. */
    int tmp = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in b = loopback(0);
    MUST(bind(tmp, (struct sockaddr *)&b, sizeof b) == 0);
    socklen_t len = sizeof b;
    MUST(getsockname(tmp, (struct sockaddr *)&b, &len) == 0);
    close(tmp);
    a.sin_port = b.sin_port;
    CALL("connect", connect(s, (struct sockaddr *)&a, sizeof a));
    CALL("send", send(s, "x", 1, 0));
    msleep(20);
    char c;
    struct timeval tv = {1, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    CALL("recv (ICMP port unreachable)", recv(s, &c, 1, 0));
    CALL("recv again", recv(s, &c, 1, MSG_DONTWAIT));
}

static void connect_unspec_disconnects(void)
{
    udp_setup();
    struct sockaddr_in a = loopback(RPORT);
    CALL("connect", connect(W, (struct sockaddr *)&a, sizeof a));
    CALL("send connected", send(W, "c", 1, 0));
    struct sockaddr un = {.sa_family = AF_UNSPEC};
    CALL("connect AF_UNSPEC", connect(W, &un, sizeof un));
    CALL("send after disconnect", send(W, "c", 1, 0));
    struct sockaddr_in peer;
    socklen_t len = sizeof peer;
    CALL("getpeername", getpeername(W, (struct sockaddr *)&peer, &len));
}

static void *burst(void *arg)
{
    long id = (long)arg;
    for (int i = 0; i < 50; i++) {
        char m[16];
        snprintf(m, sizeof m, "%ld:%d", id, i);
        send_to_r(m);
        if (i % 10 == 9)
            msleep(1);
    }
    return NULL;
}

static void datagrams_from_threads(void)
{
    udp_setup();
    int big = 1 << 20;
    setsockopt(R, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    pthread_t t[3];
    for (long i = 0; i < 3; i++)
        t[i] = spawn(burst, (void *)i);
    struct timeval tv = {2, 0};
    setsockopt(R, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int counts[3] = {0, 0, 0};
    for (int i = 0; i < 150; i++) {
        char buf[16] = {0};
        if (recv(R, buf, sizeof buf, 0) <= 0)
            break;
        int id = buf[0] - '0';
        if (id >= 0 && id < 3)
            counts[id]++;
    }
    for (int i = 0; i < 3; i++)
        join(t[i]);
    say("per thread %d %d %d", counts[0], counts[1], counts[2]);
}

static void mmsg_batches(void)
{
    udp_setup();
    struct sockaddr_in a = loopback(RPORT);
    MUST(connect(W, (struct sockaddr *)&a, sizeof a) == 0);
    struct iovec iv[3] = {{"one", 3}, {"two", 3}, {"three", 5}};
    struct mmsghdr out[3];
    memset(out, 0, sizeof out);
    for (int i = 0; i < 3; i++) {
        out[i].msg_hdr.msg_iov = &iv[i];
        out[i].msg_hdr.msg_iovlen = 1;
    }
    CALL("sendmmsg", sendmmsg(W, out, 3, 0));
    char bufs[4][8];
    memset(bufs, 0, sizeof bufs);
    struct iovec rv[4];
    struct mmsghdr in[4];
    memset(in, 0, sizeof in);
    for (int i = 0; i < 4; i++) {
        rv[i] = (struct iovec){bufs[i], 7};
        in[i].msg_hdr.msg_iov = &rv[i];
        in[i].msg_hdr.msg_iovlen = 1;
    }
    struct timespec ts = {0, 100000000};
    CALL("recvmmsg up to 4 (3 queued)", recvmmsg(R, in, 4, MSG_WAITFORONE, &ts));
    say("got %s %s %s len %u", bufs[0], bufs[1], bufs[2], in[2].msg_len);
}

static void *mmsg_sender(void *arg)
{
    (void)arg;
    msleep(50);
    say("sender: sending");
    send_to_r("late");
    return NULL;
}

static void recvmmsg_waits_for_first(void)
{
    udp_setup();
    pthread_t t = spawn(mmsg_sender, NULL);
    char buf[8] = {0};
    struct iovec rv = {buf, 7};
    struct mmsghdr in = {.msg_hdr = {.msg_iov = &rv, .msg_iovlen = 1}};
    CALL("main: recvmmsg", recvmmsg(R, &in, 1, 0, NULL));
    say("main: got %s", buf);
    join(t);
}

static void poll_udp(void)
{
    udp_setup();
    pthread_t t = spawn(send_after, "p");
    struct pollfd p = {R, POLLIN, 0};
    CALL("main: poll", poll(&p, 1, 5000));
    say("main: revents %#x", p.revents);
    join(t);
}

static void unbound_recv_timeout(void)
{
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct timeval tv = {0, 50000};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char c;
    CALL("recv on unbound UDP", recv(s, &c, 1, 0));
    CALL("send unconnected without address", send(s, "x", 1, 0));
}

DIFF_MAIN(S(recvfrom_waits_for_datagram), S(rcvtimeo_expires), S(dontwait_and_peek),
          S(truncation), S(zero_length_datagram), S(connected_refused),
          S(connect_unspec_disconnects), S(datagrams_from_threads), S(mmsg_batches),
          S(recvmmsg_waits_for_first), S(poll_udp), S(unbound_recv_timeout))
