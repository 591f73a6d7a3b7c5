/* AF_UNIX sockets with addresses: path and abstract listeners, datagram
 * servers, backpressure of a full datagram queue, credentials. */
#include "diff.h"
#include <stddef.h>
#include <sys/un.h>

static struct sockaddr_un ADDR;
static socklen_t ALEN;

static void path_addr(const char *tag)
{
    memset(&ADDR, 0, sizeof ADDR);
    ADDR.sun_family = AF_UNIX;
    snprintf(ADDR.sun_path, sizeof ADDR.sun_path, "/tmp/patchall-diff-%s-%d", tag,
             (int)getpid());
    unlink(ADDR.sun_path);
    ALEN = sizeof ADDR;
}

static void abstract_addr(const char *tag)
{
    memset(&ADDR, 0, sizeof ADDR);
    ADDR.sun_family = AF_UNIX;
    int n = snprintf(ADDR.sun_path + 1, sizeof ADDR.sun_path - 1, "patchall-diff-%s-%d", tag,
                     (int)getpid());
    ALEN = offsetof(struct sockaddr_un, sun_path) + 1 + n;
}

static int listener(int type)
{
    int l = socket(AF_UNIX, type, 0);
    MUST(l >= 0);
    MUST(bind(l, (struct sockaddr *)&ADDR, ALEN) == 0);
    if (type != SOCK_DGRAM)
        MUST(listen(l, 16) == 0);
    return l;
}

static void *client(void *arg)
{
    int type = (int)(long)arg;
    msleep(50);
    say("client: connecting");
    int s = socket(AF_UNIX, type, 0);
    MUST(connect(s, (struct sockaddr *)&ADDR, ALEN) == 0);
    MUST(send(s, "ping", 4, 0) == 4);
    char buf[8] = {0};
    ssize_t r = recv(s, buf, sizeof buf, 0);
    close(s);
    return (void *)(long)(r == 4 && memcmp(buf, "PONG", 4) == 0);
}

static void serve_one(int l)
{
    int a = accept(l, NULL, NULL);
    MUST(a >= 0);
    char buf[8] = {0};
    CALL("server: recv", recv(a, buf, sizeof buf, 0));
    say("server: got %s", buf);
    MUST(send(a, "PONG", 4, 0) == 4);
    close(a);
}

static void path_stream_server(void)
{
    path_addr("ps");
    int l = listener(SOCK_STREAM);
    pthread_t t = spawn(client, (void *)(long)SOCK_STREAM);
    serve_one(l);
    say("client ok %ld", (long)join(t));
    unlink(ADDR.sun_path);
}

static void abstract_stream_server(void)
{
    abstract_addr("as");
    int l = listener(SOCK_STREAM);
    pthread_t t = spawn(client, (void *)(long)SOCK_STREAM);
    serve_one(l);
    say("client ok %ld", (long)join(t));
}

static void seqpacket_server(void)
{
    abstract_addr("sq");
    int l = listener(SOCK_SEQPACKET);
    pthread_t t = spawn(client, (void *)(long)SOCK_SEQPACKET);
    serve_one(l);
    say("client ok %ld", (long)join(t));
}

static void *dgram_client(void *arg)
{
    (void)arg;
    msleep(50);
    say("client: sending");
    int s = socket(AF_UNIX, SOCK_DGRAM, 0);
    MUST(sendto(s, "hello", 5, 0, (struct sockaddr *)&ADDR, ALEN) == 5);
    close(s);
    return NULL;
}

static void dgram_server(void)
{
    path_addr("dg");
    int l = listener(SOCK_DGRAM);
    pthread_t t = spawn(dgram_client, NULL);
    char buf[8] = {0};
    CALL("server: recvfrom", recvfrom(l, buf, sizeof buf, 0, NULL, NULL));
    say("server: got %s", buf);
    join(t);
    unlink(ADDR.sun_path);
}

static int DL;

static void *slow_dgram_reader(void *arg)
{
    (void)arg;
    msleep(80);
    say("reader: draining");
    char buf[64];
    int n = 0;
    struct timeval tv = {0, 200000};
    setsockopt(DL, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (recv(DL, buf, sizeof buf, 0) > 0)
        n++;
    return (void *)(long)n;
}

static void dgram_full_queue_blocks_sender(void)
{
    abstract_addr("fq");
    DL = listener(SOCK_DGRAM);
    int s = socket(AF_UNIX, SOCK_DGRAM, 0);
    MUST(connect(s, (struct sockaddr *)&ADDR, ALEN) == 0);
    int sent = 0;
    while (send(s, "x", 1, MSG_DONTWAIT) == 1)
        sent++;
    say("queue full: %s (after some: %d)", ename(errno), sent > 0);
    pthread_t t = spawn(slow_dgram_reader, NULL);
    CALL("main: blocking send to the full queue", send(s, "y", 1, 0));
    long got = (long)join(t);
    say("reader got all: %d", got == sent + 1);
}

static void bind_twice_and_errors(void)
{
    path_addr("bt");
    int l = listener(SOCK_STREAM);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    CALL("bind the same path", bind(s, (struct sockaddr *)&ADDR, ALEN));
    unlink(ADDR.sun_path);
    CALL("connect after unlink", connect(s, (struct sockaddr *)&ADDR, ALEN));
    struct sockaddr_un got;
    socklen_t len = sizeof got;
    CALL("getsockname ok", getsockname(l, (struct sockaddr *)&got, &len));
    say("same path %d", strcmp(got.sun_path, ADDR.sun_path) == 0);
    char c;
    CALL("recv on a listener",
         recv(l, &c, 1, MSG_DONTWAIT));
}

static void *peer_creds(void *arg)
{
    (void)arg;
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    MUST(connect(s, (struct sockaddr *)&ADDR, ALEN) == 0);
    char c;
    recv(s, &c, 1, 0);
    close(s);
    return NULL;
}

static void so_peercred(void)
{
    abstract_addr("pc");
    int l = listener(SOCK_STREAM);
    pthread_t t = spawn(peer_creds, NULL);
    int a = accept(l, NULL, NULL);
    struct ucred cr;
    socklen_t len = sizeof cr;
    CALL("SO_PEERCRED", getsockopt(a, SOL_SOCKET, SO_PEERCRED, &cr, &len));
    say("pid is ours %d, uid is ours %d", cr.pid == getpid(), cr.uid == getuid());
    send(a, "k", 1, 0);
    join(t);
}

static char BIG[4 << 20];

static void *big_reader(void *arg)
{
    int fd = (int)(long)arg;
    char buf[10000];
    long got = 0, sum = 0;
    ssize_t r;
    while ((r = recv(fd, buf, sizeof buf, 0)) > 0) {
        for (ssize_t i = 0; i < r; i++)
            sum += (unsigned char)buf[i];
        got += r;
    }
    say("reader: got %ld sum %ld", got, sum);
    return NULL;
}

static void large_transfer_path_socket(void)
{
    path_addr("lt");
    int l = listener(SOCK_STREAM);
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    MUST(connect(c, (struct sockaddr *)&ADDR, ALEN) == 0);
    int a = accept(l, NULL, NULL);
    unlink(ADDR.sun_path);
    for (size_t i = 0; i < sizeof BIG; i++)
        BIG[i] = (char)(i % 239);
    pthread_t t = spawn(big_reader, (void *)(long)a);
    CALL("main: send 4 MiB", send(c, BIG, sizeof BIG, 0));
    close(c);
    join(t);
}

static void *shutdown_listener(void *arg)
{
    int l = (int)(long)arg;
    msleep(50);
    say("other: shutdown(listener)");
    shutdown(l, SHUT_RDWR);
    return NULL;
}

static void shutdown_unix_listener_wakes_accept(void)
{
    alarm(2);
    abstract_addr("sl");
    int l = listener(SOCK_STREAM);
    pthread_t t = spawn(shutdown_listener, (void *)(long)l);
    struct timeval tv = {1, 0};
    setsockopt(l, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    CALL("main: accept", accept(l, NULL, NULL));
    join(t);
}

DIFF_MAIN(S(path_stream_server), S(abstract_stream_server), S(seqpacket_server),
          S(dgram_server), S(dgram_full_queue_blocks_sender), S(bind_twice_and_errors),
          S(so_peercred), S(large_transfer_path_socket), S(shutdown_unix_listener_wakes_accept))
