/* fcntl and ioctl round trips: F_GETFL shows only the user's flags, whatever
 * the hooks do underneath; O_NONBLOCK set before and after creation; FIONBIO. */
#include "diff.h"
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>

static int SP[2];

/* The file status flags the kernel holds, past any hook. */
static const char *kernel_flags(int fd)
{
    long f = syscall(SYS_fcntl, fd, F_GETFL);
    if (f < 0)
        return ename(errno);
    return f & O_NONBLOCK ? "NONBLOCK" : "-";
}

static void *send_after(void *arg)
{
    int fd = (int)(long)arg;
    msleep(50);
    say("sender: sending");
    MUST(send(fd, "s", 1, 0) == 1);
    return NULL;
}

static void getfl_raw_values(void)
{
    int p[2];
    MUST(pipe(p) == 0);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int n = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    say("pipe read %#x write %#x", fcntl(p[0], F_GETFL), fcntl(p[1], F_GETFL));
    say("socket %#x, SOCK_NONBLOCK socket %#x, socketpair %#x", fcntl(s, F_GETFL),
        fcntl(n, F_GETFL), fcntl(SP[0], F_GETFL));
}

static void getfl_after_blocking_recv(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    pthread_t t = spawn(send_after, (void *)(long)SP[1]);
    char c;
    CALL("main: recv", recv(SP[0], &c, 1, 0));
    join(t);
    say("flags %s %s (raw %#x)", flags_of(SP[0]), flags_of(SP[1]), fcntl(SP[0], F_GETFL));
}

static void setfl_nonblock_then_eagain(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    CALL("F_SETFL O_NONBLOCK", fcntl(SP[0], F_SETFL, O_NONBLOCK));
    say("flags %s", flags_of(SP[0]));
    char c;
    CALL("recv", recv(SP[0], &c, 1, 0));
    CALL("read", read(SP[0], &c, 1));
    struct iovec v = {&c, 1};
    CALL("readv", readv(SP[0], &v, 1));
}

static void clear_nonblock_then_waits(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, SP) == 0);
    say("flags %s", flags_of(SP[0]));
    CALL("F_SETFL 0", fcntl(SP[0], F_SETFL, 0));
    say("flags %s", flags_of(SP[0]));
    pthread_t t = spawn(send_after, (void *)(long)SP[1]);
    char c;
    long long t0 = now_ms();
    CALL("main: recv", recv(SP[0], &c, 1, 0));
    say("main: waited %s", took(t0, 30, 5000));
    join(t);
}

static void fionbio_round_trip(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    int on = 1, off = 0;
    CALL("FIONBIO on", ioctl(SP[0], FIONBIO, &on));
    say("flags %s", flags_of(SP[0]));
    char c;
    CALL("recv", recv(SP[0], &c, 1, 0));
    CALL("FIONBIO off", ioctl(SP[0], FIONBIO, &off));
    say("flags %s", flags_of(SP[0]));
    int p[2];
    MUST(pipe(p) == 0);
    CALL("FIONBIO on pipe", ioctl(p[0], FIONBIO, &on));
    say("pipe flags %s", flags_of(p[0]));
    CALL("read pipe", read(p[0], &c, 1));
}

static void append_and_nonblock_on_file(void)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/patchall-diff-fcntl-%d", (int)getpid());
    int f = open(path, O_CREAT | O_RDWR | O_TRUNC, 0600);
    MUST(f >= 0);
    unlink(path);
    say("file %s", flags_of(f));
    CALL("F_SETFL APPEND|NONBLOCK", fcntl(f, F_SETFL, O_APPEND | O_NONBLOCK));
    say("file %s", flags_of(f));
    CALL("write", write(f, "abc", 3));
    CALL("lseek 0", lseek(f, 0, SEEK_SET));
    CALL("write appends", write(f, "d", 1));
    CALL("size", lseek(f, 0, SEEK_END));
}

static void errors(void)
{
    CALL("F_GETFL closed", fcntl(555, F_GETFL));
    CALL("F_SETFL closed", fcntl(555, F_SETFL, O_NONBLOCK));
    CALL("bad cmd", fcntl(0, 12345));
    int on = 1;
    CALL("FIONBIO closed", ioctl(555, FIONBIO, &on));
    CALL("FIONREAD on a file-less fd", ioctl(555, FIONREAD, &on));
    CALL("bad ioctl on a socket", ({
             int s = socket(AF_INET, SOCK_STREAM, 0);
             ioctl(s, 0x7fff, &on);
         }));
}

static void inherited_stdio_never_nonblocking(void)
{
    say("stdin %s stdout %s (kernel %s %s)", flags_of(0), flags_of(1), kernel_flags(0),
        kernel_flags(1));
}

static void *say_many(void *arg)
{
    long id = (long)arg;
    for (int i = 0; i < 3; i++)
        say("thread %ld line %d", id, i);
    return NULL;
}

static void stdio_kernel_flags_after_threads(void)
{
    for (long i = 0; i < 3; i++)
        join(spawn(say_many, (void *)i));
    char c;
    CALL("read stdin", read(0, &c, 1));
    say("stdin %s stdout %s (kernel %s %s)", flags_of(0), flags_of(1), kernel_flags(0),
        kernel_flags(1));
}

static long GOT;

static void *reader(void *a)
{
    (void)a;
    char c;
    GOT = recv(SP[0], &c, 1, 0);
    return NULL;
}

static void nonblock_set_while_other_waits(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    pthread_t r = spawn(reader, NULL);
    msleep(30);
    say("main: setting O_NONBLOCK while the reader waits");
    MUST(fcntl(SP[0], F_SETFL, O_NONBLOCK) == 0);
    msleep(30);
    say("main: sending");
    MUST(send(SP[1], "s", 1, 0) == 1);
    join(r);
    say("reader: recv = %ld", GOT);
}

static void getfd_setfd_round_trip(void)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    say("FD_CLOEXEC %d", fcntl(s, F_GETFD));
    CALL("F_SETFD 0", fcntl(s, F_SETFD, 0));
    say("FD_CLOEXEC %d", fcntl(s, F_GETFD));
}

static void fionread_socket(void)
{
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    MUST(send(SP[1], "12345678", 8, 0) == 8);
    int n = -1;
    CALL("FIONREAD", ioctl(SP[0], FIONREAD, &n));
    say("n %d", n);
    n = -1;
    CALL("SIOCOUTQ", ioctl(SP[1], TIOCOUTQ, &n));
    say("outq nonzero %d", n > 0);
}

static void fionbio_listener_accept(void)
{
    int port;
    int l = tcp_listener(&port);
    int on = 1;
    CALL("FIONBIO on listener", ioctl(l, FIONBIO, &on));
    CALL("accept", accept(l, NULL, NULL));
    CALL("accept4", accept4(l, NULL, NULL, SOCK_CLOEXEC));
    say("listener flags %s", flags_of(l));
}

DIFF_MAIN(S(getfl_raw_values), S(getfl_after_blocking_recv), S(setfl_nonblock_then_eagain),
          S(clear_nonblock_then_waits), S(fionbio_round_trip), S(append_and_nonblock_on_file),
          S(errors), S(inherited_stdio_never_nonblocking), S(stdio_kernel_flags_after_threads),
          S(nonblock_set_while_other_waits), S(getfd_setfd_round_trip), S(fionread_socket), S(fionbio_listener_accept))
