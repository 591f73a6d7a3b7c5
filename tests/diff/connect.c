/* connect: refused, in progress, already, connected, timed out through
 * SO_SNDTIMEO on a full backlog, completion seen through poll + SO_ERROR. */
#include "diff.h"
#include <poll.h>
#include <sys/un.h>

static int sock_nb(void)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    MUST(s >= 0);
    return s;
}

static long conn(int s, int port)
{
    struct sockaddr_in a = loopback(port);
    return connect(s, (struct sockaddr *)&a, sizeof a);
}

static const char *so_error(int s)
{
    int e = -1;
    socklen_t len = sizeof e;
    if (getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
        return "getsockopt failed";
    return ename(e);
}

static void refused_blocking(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    CALL("connect closed port", conn(s, closed_port()));
    say("SO_ERROR after %s", so_error(s));
}

static void refused_then_retry_same_socket(void)
{
    int port;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    CALL("connect closed port", conn(s, closed_port()));
    int l = tcp_listener(&port);
    CALL("retry on the same socket to a listener", conn(s, port));
    close(l);
}

static void refused_nonblocking_poll(void)
{
    int s = sock_nb();
    long r = conn(s, closed_port());
    say("connect: %s", r == 0 ? "0" : (errno == EINPROGRESS || errno == ECONNREFUSED)
                                          ? "EINPROGRESS or ECONNREFUSED"
                                          : ename(errno));
    struct pollfd p = {s, POLLOUT, 0};
    CALL("poll", poll(&p, 1, 5000));
    say("revents has OUT %d ERR %d HUP %d", !!(p.revents & POLLOUT), !!(p.revents & POLLERR),
        !!(p.revents & POLLHUP));
    say("SO_ERROR %s", r < 0 && errno == ECONNREFUSED ? "ECONNREFUSED" : so_error(s));
}

static void nonblocking_completion(void)
{
    int port;
    int l = tcp_listener(&port);
    int s = sock_nb();
    long r = conn(s, port);
    say("connect: %s", r == 0 || errno == EINPROGRESS ? "0 or EINPROGRESS" : ename(errno));
    struct pollfd p = {s, POLLOUT, 0};
    CALL("poll POLLOUT", poll(&p, 1, 5000));
    say("SO_ERROR %s", so_error(s));
    CALL("connect again", conn(s, port));
    say("flags %s", flags_of(s));
    close(l);
}

/* A listener whose accept queue is full: further SYNs are dropped, so a
 * connect to it stays in progress. */
static int full_listener(int *port, int *held)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(0);
    MUST(bind(l, (struct sockaddr *)&a, sizeof a) == 0);
    MUST(listen(l, 0) == 0);
    socklen_t len = sizeof a;
    MUST(getsockname(l, (struct sockaddr *)&a, &len) == 0);
    *port = ntohs(a.sin_port);
    *held = socket(AF_INET, SOCK_STREAM, 0);
    MUST(conn(*held, *port) == 0);
    msleep(20);
    return l;
}

static void ealready_on_full_backlog(void)
{
    int port, held;
    int l = full_listener(&port, &held);
    int s = sock_nb();
    CALL("connect (SYN dropped)", conn(s, port));
    CALL("connect again", conn(s, port));
    struct pollfd p = {s, POLLOUT, 0};
    CALL("poll 100ms", poll(&p, 1, 100));
    close(l);
}

static void sndtimeo_connect_times_out(void)
{
    int port, held;
    int l = full_listener(&port, &held);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {0, 150000};
    MUST(setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0);
    long long t0 = now_ms();
    CALL("blocking connect with SO_SNDTIMEO", conn(s, port));
    say("took ~150ms %s", took(t0, 130, 900));
    CALL("connect again", conn(s, port));
    close(l);
}

static void *accept_after(void *arg)
{
    int l = (int)(long)arg;
    msleep(100);
    say("server: accepting one");
    int a = accept(l, NULL, NULL);
    MUST(a >= 0);
    return (void *)(long)a;
}

static void eisconn_blocking(void)
{
    int c, a;
    tcp_pair(&c, &a);
    struct sockaddr_in peer;
    socklen_t len = sizeof peer;
    MUST(getpeername(c, (struct sockaddr *)&peer, &len) == 0);
    CALL("connect connected socket", connect(c, (struct sockaddr *)&peer, len));
}

static void bad_arguments(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(1);
    CALL("addrlen too short", connect(s, (struct sockaddr *)&a, 4));
    struct sockaddr_un u = {.sun_family = AF_UNIX};
    CALL("wrong family", connect(s, (struct sockaddr *)&u, sizeof u));
    int p[2];
    MUST(pipe(p) == 0);
    CALL("not a socket", connect(p[0], (struct sockaddr *)&a, sizeof a));
    CALL("closed fd", connect(999, (struct sockaddr *)&a, sizeof a));
    CALL("listening socket", ({
             int port;
             int l = tcp_listener(&port);
             struct sockaddr_in b = loopback(port);
             connect(l, (struct sockaddr *)&b, sizeof b);
         }));
}

static int PORT;

static void *connector(void *arg)
{
    long id = (long)arg;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    long r = conn(s, PORT);
    char c = 0;
    if (r == 0 && recv(s, &c, 1, 0) != 1)
        c = '?';
    close(s);
    return (void *)(long)(r == 0 ? c : -errno + id * 0);
}

static void many_threads_connect(void)
{
    int l = tcp_listener(&PORT);
    enum { N = 30 };
    pthread_t t[N];
    for (long i = 0; i < N; i++)
        t[i] = spawn(connector, (void *)i);
    for (int i = 0; i < N; i++) {
        int a = accept(l, NULL, NULL);
        MUST(a >= 0);
        MUST(send(a, "k", 1, 0) == 1);
        close(a);
    }
    int ok = 0;
    for (int i = 0; i < N; i++)
        ok += (long)join(t[i]) == 'k';
    say("connected and served %d of %d", ok, N);
}

static void *refused_in_thread(void *arg)
{
    (void)arg;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    long r = conn(s, closed_port());
    return (void *)(long)(r < 0 ? errno : 0);
}

static void refused_in_threads(void)
{
    pthread_t t[5];
    for (int i = 0; i < 5; i++)
        t[i] = spawn(refused_in_thread, NULL);
    for (int i = 0; i < 5; i++)
        say("thread %d: %s", i, ename((int)(long)join(t[i])));
}

static void unix_connect_refused_and_missing(void)
{
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un u = {.sun_family = AF_UNIX};
    snprintf(u.sun_path, sizeof u.sun_path, "/tmp/patchall-diff-missing-%d", (int)getpid());
    CALL("connect missing path", connect(s, (struct sockaddr *)&u, sizeof u));
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    MUST(bind(l, (struct sockaddr *)&u, sizeof u) == 0);
    CALL("connect bound, not listening", connect(s, (struct sockaddr *)&u, sizeof u));
    unlink(u.sun_path);
}

static void unix_nonblocking_full_backlog(void)
{
    struct sockaddr_un u = {.sun_family = AF_UNIX};
    snprintf(u.sun_path, sizeof u.sun_path, "/tmp/patchall-diff-bl-%d", (int)getpid());
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    MUST(bind(l, (struct sockaddr *)&u, sizeof u) == 0);
    MUST(listen(l, 0) == 0);
    unlink(u.sun_path);
    int n = 0;
    for (int i = 0; i < 10; i++) {
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (connect(s, (struct sockaddr *)&u, sizeof u) < 0) {
            say("connect %d: %s", n + 1, ename(errno));
            break;
        }
        n++;
    }
    say("connected before full: %d", n);
}

static void unix_blocking_connect_waits(void)
{
    struct sockaddr_un u = {.sun_family = AF_UNIX};
    snprintf(u.sun_path, sizeof u.sun_path, "/tmp/patchall-diff-bw-%d", (int)getpid());
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    MUST(bind(l, (struct sockaddr *)&u, sizeof u) == 0);
    MUST(listen(l, 0) == 0);
    int first = socket(AF_UNIX, SOCK_STREAM, 0);
    MUST(connect(first, (struct sockaddr *)&u, sizeof u) == 0);
    int second = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    connect(second, (struct sockaddr *)&u, sizeof u);
    pthread_t t = spawn(accept_after, (void *)(long)l);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    CALL("main: blocking connect to a full unix listener", connect(s, (struct sockaddr *)&u, sizeof u));
    join(t);
    unlink(u.sun_path);
}

DIFF_MAIN(S(refused_blocking), S(refused_then_retry_same_socket), S(refused_nonblocking_poll),
          S(nonblocking_completion), S(ealready_on_full_backlog),
          S(sndtimeo_connect_times_out),
          S(eisconn_blocking), S(bad_arguments), S(many_threads_connect),
          S(refused_in_threads), S(unix_connect_refused_and_missing),
          S(unix_nonblocking_full_backlog), S(unix_blocking_connect_waits))
