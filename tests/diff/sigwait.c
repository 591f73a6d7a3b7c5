/* Waiting for signals: sigwait family, sigsuspend, pause, masked waits. */
#include "sync_kit.h"

#include <sys/epoll.h>

static volatile sig_atomic_t hits;
static struct gate g1;

static void h(int sig)
{
    (void)sig;
    hits++;
}

static sigset_t just(int sig)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, sig);
    return s;
}

static void *kill_proc_later(void *arg)
{
    msleep(100);
    kill(getpid(), (int)(long)arg);
    return NULL;
}

static void sigwait_basic(void)
{
    mask1(SIG_BLOCK, SIGUSR1);
    pthread_t t = spawn(kill_proc_later, (void *)(long)SIGUSR1);
    sigset_t s = just(SIGUSR1);
    int sig = 0;
    PCALL("sigwait", sigwait(&s, &sig));
    say("got %s", sigabbrev_np(sig));
    join(t);
}

static void *queue_later(void *arg)
{
    (void)arg;
    msleep(100);
    sigqueue(getpid(), SIGUSR2, (union sigval){.sival_int = 77});
    return NULL;
}

static void sigwaitinfo_sigqueue(void)
{
    mask1(SIG_BLOCK, SIGUSR2);
    pthread_t t = spawn(queue_later, NULL);
    sigset_t s = just(SIGUSR2);
    siginfo_t si;
    int r = sigwaitinfo(&s, &si);
    say("sigwaitinfo %s code SI_QUEUE %s value %d pid ours %s", r > 0 ? sigabbrev_np(r) : ename(errno),
        si.si_code == SI_QUEUE ? "yes" : "no", si.si_value.sival_int, si.si_pid == getpid() ? "yes" : "no");
    join(t);
}

static void sigtimedwait_timeout(void)
{
    mask1(SIG_BLOCK, SIGUSR1);
    sigset_t s = just(SIGUSR1);
    struct timespec ts = {0, 150000000L};
    long long t0 = now_ms();
    CALL("sigtimedwait", sigtimedwait(&s, NULL, &ts));
    say("waited %s", took(t0, 120, 3000));
    struct timespec zero = {0, 0};
    t0 = now_ms();
    CALL("sigtimedwait zero", sigtimedwait(&s, NULL, &zero));
    say("at once %s", took(t0, 0, 1000));
    struct timespec bad = {0, 1000000000L};
    CALL("sigtimedwait bad nsec", sigtimedwait(&s, NULL, &bad));
}

static void pending_before_wait(void)
{
    mask1(SIG_BLOCK, SIGUSR1);
    raise(SIGUSR1);
    say("pending %s", pending(SIGUSR1));
    sigset_t s = just(SIGUSR1);
    siginfo_t si;
    struct timespec zero = {0, 0};
    int r = sigtimedwait(&s, &si, &zero);
    say("sigtimedwait %s code SI_TKILL %s", r > 0 ? sigabbrev_np(r) : ename(errno),
        si.si_code == SI_TKILL ? "yes" : "no");
    say("pending %s", pending(SIGUSR1));
}

static void *sigwait_after_100ms(void *arg)
{
    (void)arg;
    msleep(100);
    kill(getpid(), SIGUSR1);
    return NULL;
}

static void sigtimedwait_in_time(void)
{
    mask1(SIG_BLOCK, SIGUSR1);
    pthread_t t = spawn(sigwait_after_100ms, NULL);
    sigset_t s = just(SIGUSR1);
    struct timespec ts = {5, 0};
    long long t0 = now_ms();
    int r = sigtimedwait(&s, NULL, &ts);
    say("sigtimedwait %s early %s", r > 0 ? sigabbrev_np(r) : ename(errno), took(t0, 50, 4000));
    join(t);
}

static int got[8], ngot;

static void *signal_thread(void *arg)
{
    (void)arg;
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    sigaddset(&s, SIGUSR2);
    sigaddset(&s, SIGTERM);
    gate_open(&g1);
    for (;;) {
        int sig;
        if (sigwait(&s, &sig) != 0)
            break;
        got[ngot++] = sig;
        say("signal thread: %s", sigabbrev_np(sig));
        gate_open(&g1);
        if (sig == SIGTERM)
            break;
    }
    return NULL;
}

/* All threads block the signals; one thread sigwaits for them. */
static void dedicated_signal_thread(void)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    sigaddset(&s, SIGUSR2);
    sigaddset(&s, SIGTERM);
    MUST(pthread_sigmask(SIG_BLOCK, &s, NULL) == 0);
    gate_init(&g1);
    pthread_t t = spawn(signal_thread, NULL);
    gate_wait(&g1);
    int seq[] = {SIGUSR2, SIGUSR1, SIGUSR1, SIGTERM};
    for (int i = 0; i < 4; i++) {
        kill(getpid(), seq[i]);
        gate_wait(&g1);
    }
    join(t);
    say("got %d signals", ngot);
}

static void sigsuspend_handler(void)
{
    on(SIGUSR1, h, 0);
    mask1(SIG_BLOCK, SIGUSR1);
    pthread_t t = spawn(kill_proc_later, (void *)(long)SIGUSR1);
    sigset_t none;
    sigemptyset(&none);
    CALL("sigsuspend", sigsuspend(&none));
    say("handler ran %d, USR1 blocked again %s", (int)hits, blocked(SIGUSR1));
    join(t);
}

static void pause_handler(void)
{
    on(SIGUSR1, h, 0);
    pthread_t t = spawn(kill_proc_later, (void *)(long)SIGUSR1);
    CALL("pause", pause());
    say("handler ran %d", (int)hits);
    join(t);
}

static void *other_work(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++) {
        msleep(30);
        say("worker: step %d", i);
    }
    kill(getpid(), SIGUSR1);
    return NULL;
}

/* While main is in pause, another thread works, then signals. */
static void pause_while_others_work(void)
{
    on(SIGUSR1, h, 0);
    pthread_t t = spawn(other_work, NULL);
    CALL("pause", pause());
    say("handler ran %d", (int)hits);
    join(t);
}

static void *child_exits(void *arg)
{
    (void)arg;
    return NULL;
}

static volatile sig_atomic_t chld_hits;

static void chld(int sig)
{
    (void)sig;
    chld_hits++;
}

/* make's pattern: SIGCHLD blocked except inside pselect. */
static void pselect_sigchld_make(void)
{
    on(SIGCHLD, chld, 0);
    mask1(SIG_BLOCK, SIGCHLD);
    int p[2];
    MUST(pipe(p) == 0);
    pid_t pid = fork();
    MUST(pid >= 0);
    if (pid == 0) {
        msleep(100);
        _exit(2);
    }
    fd_set r;
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    sigset_t none;
    sigemptyset(&none);
    struct timespec ts = {5, 0};
    long long t0 = now_ms();
    CALL("pselect", pselect(p[0] + 1, &r, NULL, NULL, &ts, &none));
    say("handler ran %d early %s", (int)chld_hits, took(t0, 50, 4000));
    int st;
    waitpid(pid, &st, 0);
    say("child %s", status_of(st));
    (void)child_exits;
}

static void ppoll_lets_signal_in(void)
{
    on(SIGUSR1, h, 0);
    mask1(SIG_BLOCK, SIGUSR1);
    int p[2];
    MUST(pipe(p) == 0);
    pthread_t t = spawn(kill_proc_later, (void *)(long)SIGUSR1);
    struct pollfd pf = {p[0], POLLIN, 0};
    sigset_t none;
    sigemptyset(&none);
    struct timespec ts = {5, 0};
    CALL("ppoll", ppoll(&pf, 1, &ts, &none));
    say("handler ran %d, blocked again %s", (int)hits, blocked(SIGUSR1));
    join(t);
}

static void epoll_pwait_lets_signal_in(void)
{
    on(SIGUSR1, h, 0);
    mask1(SIG_BLOCK, SIGUSR1);
    int p[2];
    MUST(pipe(p) == 0);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev);
    pthread_t t = spawn(kill_proc_later, (void *)(long)SIGUSR1);
    sigset_t none;
    sigemptyset(&none);
    CALL("epoll_pwait", epoll_pwait(ep, &ev, 1, 5000, &none));
    say("handler ran %d", (int)hits);
    join(t);
}

/* The wait's mask keeps the signal blocked: it stays pending, then sigwait takes it. */
static void mask_keeps_pending(void)
{
    on(SIGUSR1, h, 0);
    mask1(SIG_BLOCK, SIGUSR1);
    pthread_t t = spawn(kill_proc_later, (void *)(long)SIGUSR1);
    sigset_t keep = just(SIGUSR1);
    struct timespec ts = {0, 300000000L};
    CALL("pselect", pselect(0, NULL, NULL, NULL, &ts, &keep));
    join(t);
    say("handler ran %d pending %s", (int)hits, pending(SIGUSR1));
    int sig;
    sigwait(&keep, &sig);
    say("sigwait took %s pending %s", sigabbrev_np(sig), pending(SIGUSR1));
}

static void *waiter_thread(void *arg)
{
    (void)arg;
    sigset_t s = just(SIGUSR2);
    gate_open(&g1);
    int sig;
    PCALL("t: sigwait", sigwait(&s, &sig));
    say("t: got %s", sigabbrev_np(sig));
    return NULL;
}

/* A thread sigwaits; main sends it the signal with pthread_kill. */
static void sigwait_in_thread_pthread_kill(void)
{
    mask1(SIG_BLOCK, SIGUSR2);
    gate_init(&g1);
    pthread_t t = spawn(waiter_thread, NULL);
    gate_wait(&g1);
    SETTLE();
    int e = pthread_kill(t, SIGUSR2);
    join(t);
    say("pthread_kill = %s", ename(e));
}

static void sigchld_sigwaitinfo(void)
{
    mask1(SIG_BLOCK, SIGCHLD);
    pid_t pid = fork();
    MUST(pid >= 0);
    if (pid == 0) {
        msleep(50);
        _exit(9);
    }
    sigset_t s = just(SIGCHLD);
    siginfo_t si;
    int r = sigwaitinfo(&s, &si);
    say("sigwaitinfo %s CLD_EXITED %s status %d pid matches %s", r > 0 ? sigabbrev_np(r) : ename(errno),
        si.si_code == CLD_EXITED ? "yes" : "no", si.si_status, si.si_pid == pid ? "yes" : "no");
    waitpid(pid, NULL, 0);
}

static void realtime_queue_order(void)
{
    int rt = SIGRTMIN + 1;
    mask1(SIG_BLOCK, rt);
    for (int i = 1; i <= 3; i++)
        sigqueue(getpid(), rt, (union sigval){.sival_int = i * 10});
    mask1(SIG_BLOCK, SIGUSR1);
    raise(SIGUSR1);
    raise(SIGUSR1);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, rt);
    sigaddset(&s, SIGUSR1);
    struct timespec zero = {0, 0};
    siginfo_t si;
    int r;
    while ((r = sigtimedwait(&s, &si, &zero)) > 0)
        say("%s value %d", r == rt ? "RTMIN+1" : sigabbrev_np(r), r == rt ? si.si_value.sival_int : 0);
    say("then %s", ename(errno));
}

static void *sigsuspend_thread(void *arg)
{
    (void)arg;
    sigset_t none;
    sigemptyset(&none);
    gate_open(&g1);
    CALL("t: sigsuspend", sigsuspend(&none));
    say("t: handler ran %d", (int)hits);
    return NULL;
}

static void *ticker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++) {
        msleep(30);
        say("ticker %d", i);
    }
    return NULL;
}

/* A thread in sigsuspend; another thread keeps running; main signals the first. */
static void sigsuspend_in_thread(void)
{
    on(SIGUSR1, h, 0);
    mask1(SIG_BLOCK, SIGUSR1);
    gate_init(&g1);
    pthread_t t = spawn(sigsuspend_thread, NULL);
    gate_wait(&g1);
    join(spawn(ticker, NULL));
    pthread_kill(t, SIGUSR1);
    join(t);
}

DIFF_MAIN(S(sigwait_basic), S(sigwaitinfo_sigqueue), S(sigtimedwait_timeout),
          S(pending_before_wait), S(sigtimedwait_in_time), S(dedicated_signal_thread),
          S(sigsuspend_handler), S(pause_handler), S(pause_while_others_work),
          S(pselect_sigchld_make), S(ppoll_lets_signal_in), S(epoll_pwait_lets_signal_in),
          S(mask_keeps_pending), S(sigwait_in_thread_pthread_kill), S(sigchld_sigwaitinfo),
          S(realtime_queue_order), S(sigsuspend_in_thread))
