/* Signal masks are per thread: each query returns the caller's own mask, a
 * new thread starts with its creator's, a process-directed signal interrupts
 * only the thread that lets it in, the sigwait pattern keeps working, and a
 * child (fork, posix_spawn) starts with the mask of the thread that made it.
 * Every step waits for the previous one, so the output is the same natively
 * and with green threads on any number of workers. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* sigblock and siggetmask are deprecated, but programs still call them. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#define BIT(sig) (1 << ((sig) - 1))

extern char **environ;

static int gate[2], r_pipe[2], w_pipe[2];
static volatile sig_atomic_t usr1_runs;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (write(1, buf, (size_t)n) != n)
        _exit(9);
}

static const char *blocked(int sig)
{
    sigset_t s;
    pthread_sigmask(SIG_BLOCK, NULL, &s);
    return sigismember(&s, sig) ? "yes" : "no";
}

static void mask1(int how, int sig)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, sig);
    if (pthread_sigmask(how, &s, NULL) != 0)
        _exit(8);
}

static void open_gate(void) { if (write(gate[1], "g", 1) != 1) _exit(7); }
static void wait_gate(void) { char c; if (read(gate[0], &c, 1) != 1) _exit(7); }

static void on_usr1(int sig)
{
    (void)sig;
    usr1_runs++;
}

/* 1. Own masks: inherits main's (USR1), then changes its own only. */
static void *changer(void *arg)
{
    (void)arg;
    say("changer: inherited USR1 %s USR2 %s\n", blocked(SIGUSR1), blocked(SIGUSR2));
    mask1(SIG_UNBLOCK, SIGUSR1);
    mask1(SIG_BLOCK, SIGUSR2);
    int old = sigblock(BIT(SIGTERM));
    say("changer: sigblock old had USR2 %s\n", old & BIT(SIGUSR2) ? "yes" : "no");
    say("changer: siggetmask TERM %s\n", siggetmask() & BIT(SIGTERM) ? "yes" : "no");
    open_gate();
    usleep(50 * 1000);
    say("changer: USR1 %s USR2 %s TERM %s\n", blocked(SIGUSR1), blocked(SIGUSR2), blocked(SIGTERM));
    return NULL;
}

/* 2. The only thread that lets USR1 in: kill() to the process ends its read. */
static void *unblocker(void *arg)
{
    (void)arg;
    mask1(SIG_UNBLOCK, SIGUSR1);
    open_gate();
    char c;
    ssize_t n = read(r_pipe[0], &c, 1);
    say("unblocker: read %zd %s\n", n, n < 0 && errno == EINTR ? "EINTR" : "-");
    return NULL;
}

/* Blocks USR1 (inherited): its read goes on until data comes. */
static void *reader(void *arg)
{
    (void)arg;
    open_gate();
    char c;
    ssize_t n = read(w_pipe[0], &c, 1);
    say("reader: read %zd\n", n);
    return NULL;
}

/* 3. The sigwait pattern. */
static void *waiter(void *arg)
{
    (void)arg;
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR2);
    open_gate();
    int sig = 0;
    int r = sigwait(&s, &sig);
    say("waiter: sigwait %d %s\n", r, sig == SIGUSR2 ? "SIGUSR2" : "?");
    return NULL;
}

/* 4. Children start with the mask of the thread that made them. */
static void *forker(void *arg)
{
    (void)arg;
    mask1(SIG_BLOCK, SIGHUP);
    pid_t pid = fork();
    if (pid == 0) {
        sigset_t s;
        sigprocmask(SIG_BLOCK, NULL, &s);
        say("fork child: HUP %s USR1 %s\n", sigismember(&s, SIGHUP) ? "yes" : "no",
            sigismember(&s, SIGUSR1) ? "yes" : "no");
        _exit(0);
    }
    waitpid(pid, NULL, 0);
    char *argv[] = {"grep", "SigBlk", "/proc/self/status", NULL};
    if (posix_spawnp(&pid, "grep", NULL, NULL, argv, environ) == 0)
        waitpid(pid, NULL, 0);
    return NULL;
}

static void join(pthread_t t)
{
    if (pthread_join(t, NULL) != 0)
        _exit(6);
}

int main(void)
{
    pthread_t t, u;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL); /* no SA_RESTART: a read it ends gives EINTR */
    if (pipe(gate) || pipe(r_pipe) || pipe(w_pipe))
        return 1;

    mask1(SIG_BLOCK, SIGUSR1);
    pthread_create(&t, NULL, changer, NULL);
    wait_gate();
    say("main: USR1 %s USR2 %s TERM %s\n", blocked(SIGUSR1), blocked(SIGUSR2), blocked(SIGTERM));
    join(t);
    say("main: after join USR1 %s USR2 %s\n", blocked(SIGUSR1), blocked(SIGUSR2));

    pthread_create(&t, NULL, unblocker, NULL);
    pthread_create(&u, NULL, reader, NULL);
    wait_gate();
    wait_gate();
    usleep(50 * 1000);
    kill(getpid(), SIGUSR1);
    join(t);
    say("main: handler ran %d\n", (int)usr1_runs);
    if (write(w_pipe[1], "x", 1) != 1)
        return 1;
    join(u);

    mask1(SIG_BLOCK, SIGUSR2);
    pthread_create(&t, NULL, waiter, NULL);
    wait_gate();
    usleep(50 * 1000);
    kill(getpid(), SIGUSR2);
    join(t);

    pthread_create(&t, NULL, forker, NULL);
    join(t);
    say("main: HUP %s\n", blocked(SIGHUP));
    say("done\n");
    return 0;
}
