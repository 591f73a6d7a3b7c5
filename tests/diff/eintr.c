/* I/O calls interrupted by a signal handler: restarted after SA_RESTART,
 * EINTR without it, always EINTR on a socket with a timeout, and partial
 * counts when some data already moved. */
#include "diff.h"
#include <sys/uio.h>

static int P[2], SP[2];
static pthread_t MAIN;
static volatile sig_atomic_t GOT;

static void on_usr1(int s)
{
    (void)s;
    GOT++;
}

static void handler(int flags)
{
    MAIN = pthread_self();
    struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = flags};
    sigaction(SIGUSR1, &sa, NULL);
}

/* Signals main after 50 ms; after 100 ms more writes `arg` to P[1] (if set). */
static void *kill_then_write(void *arg)
{
    msleep(50);
    say("other: signalling main");
    pthread_kill(MAIN, SIGUSR1);
    if (arg) {
        msleep(100);
        say("other: writing");
        MUST(write(P[1], arg, strlen(arg)) == (ssize_t)strlen(arg));
    }
    return NULL;
}

static void *kill_then_send(void *arg)
{
    msleep(50);
    say("other: signalling main");
    pthread_kill(MAIN, SIGUSR1);
    if (arg) {
        msleep(100);
        say("other: sending");
        MUST(send(SP[1], arg, strlen(arg), 0) == (ssize_t)strlen(arg));
    }
    return NULL;
}

static void pipe_read_restarted(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    handler(SA_RESTART);
    MUST(pipe(P) == 0);
    pthread_t t = spawn(kill_then_write, "r");
    char c = 0;
    CALL("main: read", read(P[0], &c, 1));
    say("main: handler ran %d, got %c", (int)GOT, c);
    join(t);
}

static void pipe_read_eintr(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    handler(0);
    MUST(pipe(P) == 0);
    pthread_t t = spawn(kill_then_write, NULL);
    char c = 0;
    CALL("main: read", read(P[0], &c, 1));
    say("main: handler ran %d", (int)GOT);
    join(t);
}

static void readv_eintr(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    handler(0);
    MUST(pipe(P) == 0);
    pthread_t t = spawn(kill_then_write, NULL);
    char a[2], b[2];
    struct iovec v[2] = {{a, 2}, {b, 2}};
    CALL("main: readv", readv(P[0], v, 2));
    join(t);
}

static void signal_function_restarts(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    MAIN = pthread_self();
    signal(SIGUSR1, on_usr1); /* BSD semantics: SA_RESTART */
    MUST(pipe(P) == 0);
    pthread_t t = spawn(kill_then_write, "s");
    char c = 0;
    CALL("main: read", read(P[0], &c, 1));
    say("main: handler ran %d", (int)GOT);
    join(t);
}

static void siginterrupt_makes_eintr(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    MAIN = pthread_self();
    signal(SIGUSR1, on_usr1);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    siginterrupt(SIGUSR1, 1); /* old programs still call it; it is hooked */
#pragma GCC diagnostic pop
    MUST(pipe(P) == 0);
    pthread_t t = spawn(kill_then_write, NULL);
    char c = 0;
    CALL("main: read", read(P[0], &c, 1));
    join(t);
}

static void recv_restarted(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    handler(SA_RESTART);
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    pthread_t t = spawn(kill_then_send, "k");
    char c = 0;
    CALL("main: recv", recv(SP[0], &c, 1, 0));
    say("main: handler ran %d", (int)GOT);
    join(t);
}

static void recv_with_timeout_always_eintr(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    handler(SA_RESTART);
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    struct timeval tv = {2, 0};
    MUST(setsockopt(SP[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    pthread_t t = spawn(kill_then_send, NULL);
    char c = 0;
    long long t0 = now_ms();
    CALL("main: recv (SO_RCVTIMEO, SA_RESTART)", recv(SP[0], &c, 1, 0));
    say("main: early %s", took(t0, 0, 1500));
    join(t);
}

static void recv_waitall_partial(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    handler(0);
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    MUST(send(SP[1], "abc", 3, 0) == 3);
    pthread_t t = spawn(kill_then_send, NULL);
    char buf[9] = {0};
    CALL("main: recv MSG_WAITALL 8 (3 there, then a signal)", recv(SP[0], buf, 8, MSG_WAITALL));
    say("main: got %s", buf);
    join(t);
}

static void write_full_pipe_partial(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    handler(0);
    MUST(pipe(P) == 0);
    static char big[1 << 20];
    pthread_t t = spawn(kill_then_write, NULL);
    CALL("main: write 1 MiB into an empty pipe, interrupted", write(P[1], big, sizeof big));
    join(t);
}

static void write_full_pipe_eintr(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    handler(SA_RESTART);
    MUST(pipe2(P, O_NONBLOCK) == 0);
    char buf[4096] = {0};
    while (write(P[1], buf, sizeof buf) > 0)
        ;
    MUST(fcntl(P[1], F_SETFL, 0) == 0);
    handler(0);
    pthread_t t = spawn(kill_then_write, NULL);
    CALL("main: write into a full pipe, interrupted", write(P[1], "x", 1));
    join(t);
}

static void accept_restarted(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    handler(SA_RESTART);
    int port;
    int l = tcp_listener(&port);
    pthread_t t = spawn(kill_then_write, NULL);
    join(t);
    /* The signal came before the accept: nothing to interrupt. */
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(port);
    MUST(connect(c, (struct sockaddr *)&a, sizeof a) == 0);
    CALL("accept ok", accept(l, NULL, NULL) >= 0);
}

static int PORT;

static void *kill_then_connect(void *arg)
{
    (void)arg;
    msleep(50);
    say("other: signalling main");
    pthread_kill(MAIN, SIGUSR1);
    msleep(100);
    say("other: connecting");
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(PORT);
    MUST(connect(c, (struct sockaddr *)&a, sizeof a) == 0);
    return (void *)(long)c;
}

static void accept_interrupted_restart(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    handler(SA_RESTART);
    int l = tcp_listener(&PORT);
    pthread_t t = spawn(kill_then_connect, NULL);
    CALL("main: accept (SA_RESTART)", accept(l, NULL, NULL) >= 0);
    say("main: handler ran %d", (int)GOT);
    close((int)(long)join(t));
}

static void accept_interrupted_eintr(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    handler(0);
    int l = tcp_listener(&PORT);
    pthread_t t = spawn(kill_then_connect, NULL);
    CALL("main: accept", accept(l, NULL, NULL));
    close((int)(long)join(t));
}

static void errno_kept_across_handler(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    handler(0);
    MUST(pipe(P) == 0);
    pthread_t t = spawn(kill_then_write, NULL);
    char c;
    errno = 0;
    long r = read(P[0], &c, 1);
    say("main: read = %ld errno %s", r, ename(errno));
    join(t);
}

DIFF_MAIN(S(pipe_read_restarted), S(pipe_read_eintr), S(readv_eintr),
          S(signal_function_restarts), S(siginterrupt_makes_eintr), S(recv_restarted),
          S(recv_with_timeout_always_eintr), S(recv_waitall_partial),
          S(write_full_pipe_partial), S(write_full_pipe_eintr), S(accept_restarted),
          S(accept_interrupted_restart), S(accept_interrupted_eintr),
          S(errno_kept_across_handler))
