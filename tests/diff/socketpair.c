/* socketpair(AF_UNIX): stream and seqpacket/dgram pairs, waits woken by
 * another thread, MSG_* flags, timeouts, shutdown. */
#include "diff.h"
#include <sys/ioctl.h>
#include <sys/uio.h>

static int SP[2];

static void *send_after(void *arg)
{
    msleep(50);
    say("sender: sending");
    MUST(send(SP[1], arg, strlen(arg), 0) == (ssize_t)strlen(arg));
    return NULL;
}

static void recv_waits_for_sender(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    pthread_t t = spawn(send_after, "hi");
    char buf[8] = {0};
    long long t0 = now_ms();
    CALL("main: recv", recv(SP[0], buf, sizeof buf, 0));
    say("main: got %s, waited %s", buf, took(t0, 30, 5000));
    join(t);
}

static void recv_timeout_expires(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    struct timeval tv = {0, 100000};
    MUST(setsockopt(SP[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    char c;
    long long t0 = now_ms();
    CALL("recv", recv(SP[0], &c, 1, 0));
    say("took ~100ms: %s", took(t0, 80, 2000));
    t0 = now_ms();
    CALL("read", read(SP[0], &c, 1));
    say("took ~100ms: %s", took(t0, 80, 2000));
}

static void recv_timeout_data_in_time(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    struct timeval tv = {2, 0};
    MUST(setsockopt(SP[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    pthread_t t = spawn(send_after, "ok");
    char buf[4] = {0};
    long long t0 = now_ms();
    CALL("main: recv", recv(SP[0], buf, sizeof buf, 0));
    say("main: %s before the timeout: %s", buf, took(t0, 0, 1500));
    join(t);
}

static void send_timeout_expires(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    struct timeval tv = {0, 100000};
    MUST(setsockopt(SP[1], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0);
    char buf[4096];
    memset(buf, 0, sizeof buf);
    long long t0 = 0;
    ssize_t w;
    long total = 0;
    for (;;) {
        t0 = now_ms();
        w = send(SP[1], buf, sizeof buf, 0);
        if (w < 0)
            break;
        total += w;
    }
    say("send until full: %s, took ~100ms: %s, sent some: %s", ename(errno),
        took(t0, 80, 2000), total > 0 ? "yes" : "no");
}

static void msg_dontwait_empty(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    char c;
    CALL("recv MSG_DONTWAIT", recv(SP[0], &c, 1, MSG_DONTWAIT));
    say("flags %s", flags_of(SP[0]));
    MUST(send(SP[1], "d", 1, 0) == 1);
    CALL("recv MSG_DONTWAIT", recv(SP[0], &c, 1, MSG_DONTWAIT));
}

static void msg_peek_then_read(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    pthread_t t = spawn(send_after, "peek");
    char buf[8] = {0};
    CALL("main: recv MSG_PEEK", recv(SP[0], buf, sizeof buf - 1, MSG_PEEK));
    say("peeked %s", buf);
    memset(buf, 0, sizeof buf);
    CALL("main: recv", recv(SP[0], buf, sizeof buf - 1, 0));
    say("read %s", buf);
    join(t);
}

static void *send_pieces(void *arg)
{
    (void)arg;
    const char *parts[] = {"ab", "cd", "ef", "gh"};
    for (int i = 0; i < 4; i++) {
        msleep(20);
        MUST(send(SP[1], parts[i], 2, 0) == 2);
    }
    return NULL;
}

static void msg_waitall_pieces(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    pthread_t t = spawn(send_pieces, NULL);
    char buf[9] = {0};
    CALL("main: recv MSG_WAITALL 8", recv(SP[0], buf, 8, MSG_WAITALL));
    say("got %s", buf);
    join(t);
}

static void *send_then_close(void *arg)
{
    (void)arg;
    msleep(30);
    MUST(send(SP[1], "abc", 3, 0) == 3);
    msleep(30);
    close(SP[1]);
    return NULL;
}

static void msg_waitall_short_on_eof(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    pthread_t t = spawn(send_then_close, NULL);
    char buf[9] = {0};
    CALL("main: recv MSG_WAITALL 8", recv(SP[0], buf, 8, MSG_WAITALL));
    say("got %s", buf);
    join(t);
}

static void *shutdown_after(void *arg)
{
    int how = (int)(long)arg;
    msleep(50);
    say("peer: shutdown");
    shutdown(SP[1], how);
    return NULL;
}

static void shutdown_wakes_reader(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    pthread_t t = spawn(shutdown_after, (void *)(long)SHUT_WR);
    char c;
    CALL("main: recv", recv(SP[0], &c, 1, 0));
    join(t);
}

static void shutdown_rd_self(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    MUST(shutdown(SP[0], SHUT_RD) == 0);
    char c;
    CALL("recv after own SHUT_RD", recv(SP[0], &c, 1, 0));
}

static void send_after_peer_close_epipe(void)
{
    signal(SIGPIPE, SIG_IGN);
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    close(SP[1]);
    CALL("send", send(SP[0], "x", 1, 0));
    CALL("send MSG_NOSIGNAL", send(SP[0], "x", 1, MSG_NOSIGNAL));
    CALL("write", write(SP[0], "x", 1));
}

static void send_after_peer_close_sigpipe(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    close(SP[1]);
    CALL("send MSG_NOSIGNAL", send(SP[0], "x", 1, MSG_NOSIGNAL));
    say("now without MSG_NOSIGNAL");
    send(SP[0], "x", 1, 0);
    say("not reached");
}

static void *drain_count(void *arg)
{
    (void)arg;
    char buf[3000];
    long got = 0, sum = 0;
    ssize_t r;
    while ((r = recv(SP[1], buf, sizeof buf, 0)) > 0) {
        for (ssize_t i = 0; i < r; i++)
            sum += (unsigned char)buf[i];
        got += r;
    }
    say("reader: got %ld, sum %ld", got, sum);
    return NULL;
}

static void large_send_reader_thread(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    pthread_t t = spawn(drain_count, NULL);
    static char big[3 << 20];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)(i % 251);
    CALL("main: send 3 MiB", send(SP[0], big, sizeof big, 0));
    shutdown(SP[0], SHUT_WR);
    join(t);
}

static void seqpacket_boundaries(void)
{
    MUST(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, SP) == 0);
    MUST(send(SP[1], "one", 3, 0) == 3);
    MUST(send(SP[1], "three", 5, 0) == 5);
    char buf[16] = {0};
    CALL("recv", recv(SP[0], buf, sizeof buf, 0));
    say("got %s", buf);
    memset(buf, 0, sizeof buf);
    CALL("recv 2 of 5 (truncated)", recv(SP[0], buf, 2, 0));
    say("got %s", buf);
    close(SP[1]);
    CALL("recv after close", recv(SP[0], buf, sizeof buf, 0));
}

static void *dgram_sender(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++) {
        msleep(20);
        char m[8];
        int n = snprintf(m, sizeof m, "d%d", i);
        MUST(send(SP[1], m, n, 0) == n);
    }
    return NULL;
}

static void dgram_pair_thread(void)
{
    MUST(socketpair(AF_UNIX, SOCK_DGRAM, 0, SP) == 0);
    pthread_t t = spawn(dgram_sender, NULL);
    for (int i = 0; i < 3; i++) {
        char buf[8] = {0};
        CALL("main: recv", recv(SP[0], buf, sizeof buf, 0));
        say("got %s", buf);
    }
    join(t);
}

static void nonblock_pair_flag(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, SP) == 0);
    say("flags %s %s", flags_of(SP[0]), flags_of(SP[1]));
    char c;
    CALL("recv", recv(SP[0], &c, 1, 0));
    CALL("read", read(SP[0], &c, 1));
}

static void *echo_back(void *arg)
{
    (void)arg;
    char buf[64];
    ssize_t r;
    while ((r = recv(SP[1], buf, sizeof buf, 0)) > 0)
        MUST(send(SP[1], buf, r, 0) == r);
    return NULL;
}

static void echo_thread_many_rounds(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    pthread_t t = spawn(echo_back, NULL);
    int ok = 0;
    for (int i = 0; i < 200; i++) {
        char m[16], buf[16] = {0};
        int n = snprintf(m, sizeof m, "m%d", i);
        MUST(send(SP[0], m, n, 0) == n);
        MUST(recv(SP[0], buf, n, MSG_WAITALL) == n);
        ok += memcmp(m, buf, n) == 0;
    }
    shutdown(SP[0], SHUT_WR);
    join(t);
    say("rounds ok %d", ok);
}

static void readv_writev_pair(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    struct iovec w[3] = {{"ab", 2}, {"cde", 3}, {"f", 1}};
    CALL("writev", writev(SP[1], w, 3));
    char a[3] = {0}, b[5] = {0};
    struct iovec r[2] = {{a, 2}, {b, 4}};
    CALL("readv", readv(SP[0], r, 2));
    say("got %s|%s", a, b);
}

static void sendmsg_recvmsg_fd_passing(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    int p[2];
    MUST(pipe(p) == 0);
    char ctl[CMSG_SPACE(sizeof(int))] = {0};
    struct iovec iov = {"F", 1};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
                       .msg_controllen = sizeof ctl};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &p[1], sizeof(int));
    CALL("sendmsg", sendmsg(SP[1], &m, 0));
    char got;
    char rctl[CMSG_SPACE(sizeof(int))] = {0};
    struct iovec riov = {&got, 1};
    struct msghdr rm = {.msg_iov = &riov, .msg_iovlen = 1, .msg_control = rctl,
                        .msg_controllen = sizeof rctl};
    CALL("recvmsg", recvmsg(SP[0], &rm, 0));
    struct cmsghdr *rc = CMSG_FIRSTHDR(&rm);
    MUST(rc && rc->cmsg_type == SCM_RIGHTS);
    int fd;
    memcpy(&fd, CMSG_DATA(rc), sizeof fd);
    CALL("write via passed fd", write(fd, "z", 1));
    char z = 0;
    CALL("read pipe", read(p[0], &z, 1));
    say("got %c", z);
}

static void fionbio_on_pair(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    int on = 1;
    CALL("ioctl FIONBIO 1", ioctl(SP[0], FIONBIO, &on));
    say("flags %s", flags_of(SP[0]));
    char c;
    CALL("recv", recv(SP[0], &c, 1, 0));
    on = 0;
    CALL("ioctl FIONBIO 0", ioctl(SP[0], FIONBIO, &on));
    say("flags %s", flags_of(SP[0]));
    pthread_t t = spawn(send_after, "w");
    CALL("blocking recv", recv(SP[0], &c, 1, 0));
    join(t);
}

static void rcvtimeo_zero_is_infinite(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    struct timeval tv = {0, 0};
    MUST(setsockopt(SP[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    pthread_t t = spawn(send_after, "z");
    char c = 0;
    CALL("main: recv with a zero timeout (none)", recv(SP[0], &c, 1, 0));
    join(t);
}

static void *send_three(void *arg)
{
    (void)arg;
    msleep(30);
    say("sender: 3 bytes");
    MUST(send(SP[1], "abc", 3, 0) == 3);
    return NULL;
}

static void waitall_timeout_partial(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    struct timeval tv = {0, 150000};
    MUST(setsockopt(SP[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    pthread_t t = spawn(send_three, NULL);
    char buf[9] = {0};
    long long t0 = now_ms();
    CALL("main: recv MSG_WAITALL 8 with a 150 ms timeout", recv(SP[0], buf, 8, MSG_WAITALL));
    say("main: got %s, after the timeout %s", buf, took(t0, 130, 2000));
    join(t);
}

static void *set_timeout_later(void *arg)
{
    (void)arg;
    msleep(30);
    say("other: setting SO_RCVTIMEO 50ms while main waits");
    struct timeval tv = {0, 50000};
    MUST(setsockopt(SP[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    msleep(170);
    say("other: sending");
    MUST(send(SP[1], "l", 1, 0) == 1);
    return NULL;
}

static void rcvtimeo_set_while_waiting(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    pthread_t t = spawn(set_timeout_later, NULL);
    char c = 0;
    CALL("main: recv (no timeout when it began)", recv(SP[0], &c, 1, 0));
    join(t);
}

static void negative_timeout_rejected(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    struct timeval tv = {0, -5};
    CALL("SO_RCVTIMEO usec -5", setsockopt(SP[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    struct timeval neg = {-1, 0};
    CALL("SO_RCVTIMEO sec -1", setsockopt(SP[0], SOL_SOCKET, SO_RCVTIMEO, &neg, sizeof neg));
    struct timeval back;
    socklen_t len = sizeof back;
    MUST(getsockopt(SP[0], SOL_SOCKET, SO_RCVTIMEO, &back, &len) == 0);
    say("now %ld.%06ld", (long)back.tv_sec, (long)back.tv_usec);
    CALL("SO_RCVTIMEO short optlen", setsockopt(SP[0], SOL_SOCKET, SO_RCVTIMEO, &tv, 4));
}

static void *recvmsg_reader(void *arg)
{
    (void)arg;
    static char buf[1 << 20];
    struct iovec v[2] = {{buf, 1000}, {buf + 1000, sizeof buf - 1000}};
    struct msghdr m = {.msg_iov = v, .msg_iovlen = 2};
    long got = recvmsg(SP[1], &m, MSG_WAITALL);
    long sum = 0;
    for (long i = 0; i < got; i++)
        sum += (unsigned char)buf[i];
    static char out[96];
    snprintf(out, sizeof out, "reader: recvmsg MSG_WAITALL = %ld sum %ld", got, sum);
    return out;
}

static void sendmsg_large_recvmsg_waitall(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    static char data[1 << 20];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (char)(i % 101);
    pthread_t t = spawn(recvmsg_reader, NULL);
    struct iovec v[3] = {{data, 10}, {data + 10, 500000}, {data + 500010, sizeof data - 500010}};
    struct msghdr m = {.msg_iov = v, .msg_iovlen = 3};
    CALL("main: sendmsg 1 MiB in 3 pieces", sendmsg(SP[0], &m, 0));
    say("%s", (char *)join(t));
}

static void socket_misc_errors(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    char c;
    CALL("pread on a socket", pread(SP[0], &c, 1, 0));
    CALL("lseek on a socket", lseek(SP[0], 0, SEEK_SET));
    CALL("recv on a pipe", ({
             int p[2];
             MUST(pipe(p) == 0);
             recv(p[0], &c, 1, MSG_DONTWAIT);
         }));
    CALL("send bad flags", send(SP[0], "x", 1, 0x40000000));
    CALL("recv MSG_OOB on unix", recv(SP[0], &c, 1, MSG_OOB | MSG_DONTWAIT));
}

DIFF_MAIN(S(recv_waits_for_sender), S(recv_timeout_expires), S(recv_timeout_data_in_time),
          S(send_timeout_expires), S(msg_dontwait_empty), S(msg_peek_then_read),
          S(msg_waitall_pieces), S(msg_waitall_short_on_eof), S(shutdown_wakes_reader),
          S(shutdown_rd_self), S(send_after_peer_close_epipe),
          S(send_after_peer_close_sigpipe), S(large_send_reader_thread),
          S(seqpacket_boundaries), S(dgram_pair_thread), S(nonblock_pair_flag),
          S(echo_thread_many_rounds), S(readv_writev_pair), S(sendmsg_recvmsg_fd_passing),
          S(fionbio_on_pair), S(rcvtimeo_zero_is_infinite), S(waitall_timeout_partial),
          S(rcvtimeo_set_while_waiting), S(negative_timeout_rejected), S(sendmsg_large_recvmsg_waitall), S(socket_misc_errors))
