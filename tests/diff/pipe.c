/* Pipes: EOF, EPIPE/SIGPIPE, blocking reads and writes woken by another
 * thread, non-blocking flags, large transfers. */
#include "diff.h"
#include <sys/ioctl.h>
#include <sys/syscall.h>

static int P[2];

static void *write_after(void *arg)
{
    msleep(50);
    say("writer: writing");
    MUST(write(P[1], arg, strlen(arg)) == (ssize_t)strlen(arg));
    return NULL;
}

static void read_waits_for_writer(void)
{
    MUST(pipe(P) == 0);
    pthread_t t = spawn(write_after, "hello");
    char buf[16] = {0};
    long long t0 = now_ms();
    CALL("main: read", read(P[0], buf, sizeof buf));
    say("main: got %s, waited %s", buf, took(t0, 30, 5000));
    join(t);
}

static void *close_after(void *arg)
{
    (void)arg;
    msleep(50);
    say("closer: closing write end");
    close(P[1]);
    return NULL;
}

static void eof_after_close(void)
{
    MUST(pipe(P) == 0);
    pthread_t t = spawn(close_after, NULL);
    char c;
    CALL("main: read", read(P[0], &c, 1));
    join(t);
    CALL("main: read again", read(P[0], &c, 1));
}

static void epipe_sigpipe_ignored(void)
{
    signal(SIGPIPE, SIG_IGN);
    MUST(pipe(P) == 0);
    close(P[0]);
    CALL("write", write(P[1], "x", 1));
}

static void epipe_sigpipe_default(void)
{
    MUST(pipe(P) == 0);
    close(P[0]);
    say("writing to a pipe without reader");
    write(P[1], "x", 1);
    say("not reached");
}

static void *fill_writer(void *arg)
{
    long total = (long)arg;
    char buf[8192];
    memset(buf, 'a', sizeof buf);
    long done = 0;
    while (done < total) {
        long n = total - done < (long)sizeof buf ? total - done : (long)sizeof buf;
        ssize_t w = write(P[1], buf, n);
        if (w <= 0) {
            say("writer: write failed %s", ename(errno));
            return NULL;
        }
        done += w;
    }
    say("writer: wrote %ld", done);
    close(P[1]);
    return NULL;
}

static void large_transfer_reader_thread(void)
{
    MUST(pipe(P) == 0);
    long total = 4 << 20;
    pthread_t t = spawn(fill_writer, (void *)total);
    char buf[5000];
    long got = 0, bad = 0;
    for (;;) {
        ssize_t r = read(P[0], buf, sizeof buf);
        if (r < 0) {
            say("read failed %s", ename(errno));
            break;
        }
        if (r == 0)
            break;
        for (ssize_t i = 0; i < r; i++)
            bad += buf[i] != 'a';
        got += r;
    }
    join(t);
    say("reader: got %ld, bad %ld", got, bad);
}

static void *slow_reader(void *arg)
{
    (void)arg;
    msleep(50);
    char buf[65536];
    long got = 0;
    ssize_t r;
    while ((r = read(P[0], buf, sizeof buf)) > 0)
        got += r;
    say("reader: got %ld", got);
    return NULL;
}

static void write_blocks_on_full_pipe(void)
{
    MUST(pipe(P) == 0);
    pthread_t t = spawn(slow_reader, NULL);
    static char big[1 << 20];
    memset(big, 'b', sizeof big);
    CALL("main: write 1 MiB", write(P[1], big, sizeof big));
    close(P[1]);
    join(t);
}

static void nonblocking_empty_read(void)
{
    MUST(pipe2(P, O_NONBLOCK) == 0);
    say("flags %s", flags_of(P[0]));
    char c;
    CALL("read", read(P[0], &c, 1));
    CALL("write", write(P[1], "z", 1));
    CALL("read", read(P[0], &c, 1));
}

static void nonblocking_full_write(void)
{
    MUST(pipe2(P, O_NONBLOCK) == 0);
    char buf[4096];
    memset(buf, 0, sizeof buf);
    long total = 0;
    ssize_t w;
    while ((w = write(P[1], buf, sizeof buf)) > 0)
        total += w;
    say("write until full: %s, filled %s", ename(errno), total >= 4096 ? "yes" : "no");
    CALL("fcntl F_SETPIPE_SZ", fcntl(P[1], F_GETPIPE_SZ) == total);
}

static void set_nonblock_after_creation(void)
{
    MUST(pipe(P) == 0);
    say("flags before %s", flags_of(P[0]));
    MUST(fcntl(P[0], F_SETFL, fcntl(P[0], F_GETFL) | O_NONBLOCK) == 0);
    say("flags after %s", flags_of(P[0]));
    char c;
    CALL("read", read(P[0], &c, 1));
    MUST(fcntl(P[0], F_SETFL, fcntl(P[0], F_GETFL) & ~O_NONBLOCK) == 0);
    say("flags cleared %s", flags_of(P[0]));
    pthread_t t = spawn(write_after, "q");
    CALL("blocking read", read(P[0], &c, 1));
    join(t);
}

static void *ping(void *arg)
{
    int *fds = arg;
    char c;
    for (int i = 0; i < 5; i++) {
        MUST(read(fds[0], &c, 1) == 1);
        say("ping got %c", c);
        MUST(write(fds[3], "p", 1) == 1);
    }
    return NULL;
}

static void ping_pong_two_pipes(void)
{
    static int fds[4];
    MUST(pipe(fds) == 0 && pipe(fds + 2) == 0);
    pthread_t t = spawn(ping, fds);
    char c;
    for (int i = 0; i < 5; i++) {
        MUST(write(fds[1], "m", 1) == 1);
        MUST(read(fds[2], &c, 1) == 1);
        say("main got %c", c);
    }
    join(t);
}

static void read_zero_bytes(void)
{
    MUST(pipe(P) == 0);
    char c;
    CALL("read 0 bytes of empty pipe", read(P[0], &c, 0));
    CALL("write 0 bytes", write(P[1], &c, 0));
}

static void wrong_direction(void)
{
    MUST(pipe(P) == 0);
    char c = 0;
    CALL("write to read end", write(P[0], &c, 1));
    CALL("read from write end", read(P[1], &c, 1));
}

static void *reader_n(void *arg)
{
    long id = (long)arg;
    char c;
    (void)id;
    ssize_t r = read(P[0], &c, 1);
    return (void *)r;
}

static void many_readers_one_eof(void)
{
    MUST(pipe(P) == 0);
    pthread_t t[4];
    for (long i = 0; i < 4; i++)
        t[i] = spawn(reader_n, (void *)i);
    msleep(50);
    say("closing the write end");
    close(P[1]);
    for (int i = 0; i < 4; i++)
        say("reader %d: read = %ld", i, (long)join(t[i]));
}

static void *count_reader(void *arg)
{
    (void)arg;
    char buf[64];
    long got = 0;
    ssize_t r;
    while ((r = read(P[0], buf, sizeof buf)) > 0)
        got += r;
    return (void *)got;
}

static void atomic_small_writes_threads(void)
{
    MUST(pipe(P) == 0);
    pthread_t r = spawn(count_reader, NULL);
    for (int i = 0; i < 1000; i++)
        MUST(write(P[1], "0123456789", 10) == 10);
    close(P[1]);
    say("reader got %ld", (long)join(r));
}

static void pipe_fionread(void)
{
    MUST(pipe(P) == 0);
    MUST(write(P[1], "abcde", 5) == 5);
    int n = -1;
    CALL("ioctl FIONREAD", ioctl(P[0], FIONREAD, &n));
    say("available %d", n);
}

static void nonblocking_partial_write(void)
{
    MUST(pipe2(P, O_NONBLOCK) == 0);
    static char big[1 << 20];
    CALL("write 1 MiB into an empty non-blocking pipe", write(P[1], big, sizeof big));
    CALL("write again", write(P[1], big, sizeof big));
}

static volatile int TICKS, DONE;

static void *ticker(void *arg)
{
    (void)arg;
    while (!DONE) {
        msleep(10);
        TICKS++;
    }
    return NULL;
}

/* Run as `pipe stdin_child` by inherited_pipe_stdin, with a pipe from the
 * parent as stdin (run alone, stdin is /dev/null: it reads EOF). */
static void stdin_child(void)
{
    long f = syscall(SYS_fcntl, 0, F_GETFL);
    say("child: stdin kernel flags %s", f & O_NONBLOCK ? "NONBLOCK" : "-");
    pthread_t t = spawn(ticker, NULL);
    char buf[8] = {0};
    long r = read(0, buf, sizeof buf - 1);
    DONE = 1;
    join(t);
    if (r > 0)
        say("child: read = %ld %s, the other thread ran meanwhile: %s", r, buf,
            TICKS > 2 ? "yes" : "no");
    else
        say("child: read = %ld", r);
    f = syscall(SYS_fcntl, 0, F_GETFL);
    say("child: stdin kernel flags %s", f & O_NONBLOCK ? "NONBLOCK" : "-");
}

static void inherited_pipe_stdin(void)
{
    alarm(5);
    MUST(pipe(P) == 0);
    pid_t pid = fork();
    MUST(pid >= 0);
    if (pid == 0) {
        dup2(P[0], 0);
        close(P[0]);
        close(P[1]);
        execl("/proc/self/exe", "pipe", "stdin_child", (char *)NULL);
        _exit(127);
    }
    close(P[0]);
    msleep(150);
    say("parent: writing");
    MUST(write(P[1], "in", 2) == 2);
    close(P[1]);
    int st;
    MUST(waitpid(pid, &st, 0) == pid);
    say("parent: child %s", status_of(st));
}

DIFF_MAIN(S(read_waits_for_writer), S(eof_after_close), S(epipe_sigpipe_ignored),
          S(epipe_sigpipe_default), S(large_transfer_reader_thread),
          S(write_blocks_on_full_pipe), S(nonblocking_empty_read), S(nonblocking_full_write),
          S(set_nonblock_after_creation), S(ping_pong_two_pipes), S(read_zero_bytes),
          S(wrong_direction), S(many_readers_one_eof), S(atomic_small_writes_threads),
          S(pipe_fionread), S(nonblocking_partial_write), S(stdin_child),
          S(inherited_pipe_stdin))
