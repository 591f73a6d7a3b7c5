/* Signal handlers interrupting waits, masks, sigaction round trips. */
#include "sync_kit.h"

#include <sys/epoll.h>

static volatile sig_atomic_t hits, hits2, nested_blocked;
static int pfd[2];
static int cfd, sfd;
static pthread_t target;
static sem_t sem;
static struct gate g1;

static void h(int sig)
{
    (void)sig;
    hits++;
}

static void *kill_after_100ms(void *arg)
{
    (void)arg;
    msleep(100);
    pthread_kill(target, SIGUSR1);
    return NULL;
}

static void *kill_then_write(void *arg)
{
    (void)arg;
    msleep(100);
    pthread_kill(target, SIGUSR1);
    msleep(100);
    MUST(write(pfd[1], "d", 1) == 1);
    return NULL;
}

/* Main blocks in `fn`; a thread signals main after 100 ms (and writes 100 ms later). */
static void interrupt_main(int flags, void (*fn)(void), int then_write)
{
    on(SIGUSR1, h, flags);
    target = pthread_self();
    pthread_t t = spawn(then_write ? kill_then_write : kill_after_100ms, NULL);
    fn();
    say("handler ran %d", (int)hits);
    join(t);
}

static void do_read(void)
{
    char c;
    CALL("read", read(pfd[0], &c, 1));
}

static void read_no_restart(void)
{
    MUST(pipe(pfd) == 0);
    interrupt_main(0, do_read, 0);
}

static void read_restart(void)
{
    MUST(pipe(pfd) == 0);
    interrupt_main(SA_RESTART, do_read, 1);
}

static void do_recv(void)
{
    char c;
    CALL("recv", recv(sfd, &c, 1, 0));
}

static void recv_no_restart(void)
{
    tcp_pair(&cfd, &sfd);
    interrupt_main(0, do_recv, 0);
}

static void recv_restart(void)
{
    tcp_pair(&cfd, &sfd);
    pfd[1] = cfd;
    interrupt_main(SA_RESTART, do_recv, 1);
}

static void do_sleep(void)
{
    unsigned r = sleep(5);
    say("sleep left something %s", r > 0 && r <= 5 ? "yes" : "no");
}

static void sleep_interrupted(void)
{
    interrupt_main(SA_RESTART, do_sleep, 0);
}

static void do_nanosleep(void)
{
    struct timespec ts = {5, 0}, rem = {0, 0};
    CALL("nanosleep", nanosleep(&ts, &rem));
    say("rem in (0,5s] %s", rem.tv_sec < 5 && (rem.tv_sec > 0 || rem.tv_nsec > 0) ? "yes" : "no");
}

static void nanosleep_interrupted(void)
{
    interrupt_main(SA_RESTART, do_nanosleep, 0);
}

static void do_usleep(void)
{
    long long t0 = now_ms();
    CALL("usleep", usleep(3000000));
    say("cut short %s", took(t0, 50, 2000));
}

static void usleep_interrupted(void)
{
    interrupt_main(0, do_usleep, 0);
}

static void do_poll(void)
{
    struct pollfd p = {pfd[0], POLLIN, 0};
    CALL("poll", poll(&p, 1, 5000));
}

static void poll_restart_still_eintr(void)
{
    MUST(pipe(pfd) == 0);
    interrupt_main(SA_RESTART, do_poll, 0);
}

static void do_select(void)
{
    fd_set r;
    FD_ZERO(&r);
    FD_SET(pfd[0], &r);
    struct timeval tv = {5, 0};
    CALL("select", select(pfd[0] + 1, &r, NULL, NULL, &tv));
}

static void select_restart_still_eintr(void)
{
    MUST(pipe(pfd) == 0);
    interrupt_main(SA_RESTART, do_select, 0);
}

static void do_epoll(void)
{
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    epoll_ctl(ep, EPOLL_CTL_ADD, pfd[0], &ev);
    CALL("epoll_wait", epoll_wait(ep, &ev, 1, 5000));
    close(ep);
}

static void epoll_restart_still_eintr(void)
{
    MUST(pipe(pfd) == 0);
    interrupt_main(SA_RESTART, do_epoll, 0);
}

static void do_sem_wait(void)
{
    CALL("sem_wait", sem_wait(&sem));
}

static void sem_wait_no_restart(void)
{
    sem_init(&sem, 0, 0);
    interrupt_main(0, do_sem_wait, 0);
}

static void *kill_then_post(void *arg)
{
    (void)arg;
    msleep(100);
    pthread_kill(target, SIGUSR1);
    msleep(100);
    sem_post(&sem);
    return NULL;
}

static void sem_wait_restart(void)
{
    sem_init(&sem, 0, 0);
    on(SIGUSR1, h, SA_RESTART);
    target = pthread_self();
    pthread_t t = spawn(kill_then_post, NULL);
    int r;
    while ((r = sem_wait(&sem)) < 0 && errno == EINTR)
        say("sem_wait EINTR (glibc does not restart it)");
    say("sem_wait = %d handler ran %d", r, (int)hits);
    join(t);
}

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t c = PTHREAD_COND_INITIALIZER;
static int go;

static void *kill_then_signal(void *arg)
{
    (void)arg;
    msleep(100);
    pthread_kill(target, SIGUSR1);
    msleep(100);
    pthread_mutex_lock(&m);
    go = 1;
    pthread_cond_signal(&c);
    pthread_mutex_unlock(&m);
    return NULL;
}

/* A handler runs during cond_wait; the wait goes on (or wakes spuriously) until go. */
static void cond_wait_not_interrupted(void)
{
    on(SIGUSR1, h, 0);
    target = pthread_self();
    pthread_t t = spawn(kill_then_signal, NULL);
    pthread_mutex_lock(&m);
    int r = 0;
    while (!go && r == 0)
        r = pthread_cond_wait(&c, &m);
    pthread_mutex_unlock(&m);
    say("cond_wait = %s go = %d handler ran %d", ename(r), go, (int)hits);
    join(t);
}

static void alrm(int sig)
{
    (void)sig;
    hits++;
}

static void alarm_read(void)
{
    MUST(pipe(pfd) == 0);
    on(SIGALRM, alrm, 0);
    long long t0 = now_ms();
    alarm(1);
    char c;
    CALL("read", read(pfd[0], &c, 1));
    say("after about a second %s handler ran %d", took(t0, 700, 5000), (int)hits);
}

static void *blocked_reader(void *arg)
{
    (void)arg;
    char c;
    gate_open(&g1);
    CALL("t: read", read(pfd[0], &c, 1));
    return NULL;
}

static void pthread_kill_blocked_thread(void)
{
    MUST(pipe(pfd) == 0);
    on(SIGUSR1, h, 0);
    gate_init(&g1);
    pthread_t t = spawn(blocked_reader, NULL);
    gate_wait(&g1);
    SETTLE();
    PCALL("pthread_kill", pthread_kill(t, SIGUSR1));
    join(t);
    say("handler ran %d", (int)hits);
}

static void *blocked_reader_restart(void *arg)
{
    (void)arg;
    char c;
    gate_open(&g1);
    CALL("t: read", read(pfd[0], &c, 1));
    say("t: handler ran %d", (int)hits);
    return NULL;
}

/* SA_RESTART: the signalled thread's read goes on and gets main's byte. */
static void pthread_kill_blocked_thread_restart(void)
{
    MUST(pipe(pfd) == 0);
    on(SIGUSR1, h, SA_RESTART);
    gate_init(&g1);
    pthread_t t = spawn(blocked_reader_restart, NULL);
    gate_wait(&g1);
    SETTLE();
    pthread_kill(t, SIGUSR1);
    msleep(100);
    MUST(write(pfd[1], "x", 1) == 1);
    join(t);
}

static void *raiser(void *arg)
{
    (void)arg;
    say("t: raise");
    raise(SIGUSR1);
    say("t: after raise, handler ran %d", (int)hits);
    return NULL;
}

static void raise_in_thread(void)
{
    on(SIGUSR1, h, 0);
    join(spawn(raiser, NULL));
}

static void sigprocmask_round_trip(void)
{
    on(SIGUSR1, h, 0);
    sigset_t s, old, now;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    CALL("sigprocmask block", sigprocmask(SIG_BLOCK, &s, &old));
    say("was blocked %s", sigismember(&old, SIGUSR1) ? "yes" : "no");
    raise(SIGUSR1);
    say("handler ran %d pending %s", (int)hits, pending(SIGUSR1));
    sigprocmask(SIG_SETMASK, NULL, &now);
    say("blocked now %s", sigismember(&now, SIGUSR1) ? "yes" : "no");
    CALL("sigprocmask unblock", sigprocmask(SIG_UNBLOCK, &s, NULL));
    say("handler ran %d pending %s", (int)hits, pending(SIGUSR1));
    CALL("sigprocmask bad how", sigprocmask(99, &s, NULL));
}

static void *mask_in_thread(void *arg)
{
    (void)arg;
    mask1(SIG_BLOCK, SIGUSR2);
    gate_open(&g1);
    msleep(100);
    say("t: USR2 blocked %s USR1 blocked %s", blocked(SIGUSR2), blocked(SIGUSR1));
    return NULL;
}

/* Masks are per thread, also across the other's waits. */
static void pthread_sigmask_per_thread(void)
{
    gate_init(&g1);
    mask1(SIG_BLOCK, SIGUSR1);
    pthread_t t = spawn(mask_in_thread, NULL);
    gate_wait(&g1);
    say("main: USR2 blocked %s USR1 blocked %s", blocked(SIGUSR2), blocked(SIGUSR1));
    join(t);
    say("main: USR2 blocked %s USR1 blocked %s", blocked(SIGUSR2), blocked(SIGUSR1));
}

static void *inherits_mask(void *arg)
{
    (void)arg;
    say("t: inherited USR1 blocked %s", blocked(SIGUSR1));
    return NULL;
}

static void new_thread_inherits_mask(void)
{
    mask1(SIG_BLOCK, SIGUSR1);
    join(spawn(inherits_mask, NULL));
    mask1(SIG_UNBLOCK, SIGUSR1);
    join(spawn(inherits_mask, NULL));
}

static void chld(int sig)
{
    (void)sig;
    hits++;
}

static void sigchld_handler(void)
{
    on(SIGCHLD, chld, 0);
    MUST(pipe(pfd) == 0);
    pid_t pid = fork();
    MUST(pid >= 0);
    if (pid == 0) {
        msleep(100);
        _exit(3);
    }
    char c;
    CALL("read", read(pfd[0], &c, 1));
    int st;
    MUST(waitpid(pid, &st, 0) == pid);
    say("SIGCHLD handler ran %d child %s", (int)hits, status_of(st));
}

static void sigaction_round_trip(void)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = h;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR2);
    CALL("sigaction set", sigaction(SIGUSR1, &sa, &old));
    say("old was default %s", old.sa_handler == SIG_DFL ? "yes" : "no");
    CALL("sigaction query", sigaction(SIGUSR1, NULL, &old));
    say("handler kept %s restart %s mask kept %s", old.sa_handler == h ? "yes" : "no",
        old.sa_flags & SA_RESTART ? "yes" : "no", sigismember(&old.sa_mask, SIGUSR2) ? "yes" : "no");
    sa.sa_handler = SIG_IGN;
    sigaction(SIGUSR1, &sa, &old);
    say("returned our handler %s", old.sa_handler == h ? "yes" : "no");
    raise(SIGUSR1);
    say("ignored: handler ran %d", (int)hits);
    CALL("sigaction SIGKILL", sigaction(SIGKILL, &sa, NULL));
    CALL("sigaction 0", sigaction(0, &sa, NULL));
    sighandler_t prev = signal(SIGUSR1, SIG_DFL);
    say("signal() returned SIG_IGN %s", prev == SIG_IGN ? "yes" : "no");
}

static void reset_handler(int sig)
{
    (void)sig;
    hits++;
    struct sigaction now;
    sigaction(SIGUSR1, NULL, &now);
    hits2 = now.sa_handler == SIG_DFL;
}

static void sa_resethand(void)
{
    on(SIGUSR1, reset_handler, SA_RESETHAND);
    raise(SIGUSR1);
    struct sigaction now;
    sigaction(SIGUSR1, NULL, &now);
    say("handler ran %d, default inside %s, default after %s", (int)hits, hits2 ? "yes" : "no",
        now.sa_handler == SIG_DFL ? "yes" : "no");
}

static void nodefer_handler(int sig)
{
    (void)sig;
    sigset_t s;
    pthread_sigmask(SIG_BLOCK, NULL, &s);
    nested_blocked = sigismember(&s, SIGUSR1) ? 1 : 2;
    if (hits++ == 0)
        raise(SIGUSR1);
}

static void sa_nodefer(void)
{
    on(SIGUSR1, nodefer_handler, 0);
    raise(SIGUSR1);
    say("default: blocked inside %s, runs %d", nested_blocked == 1 ? "yes" : "no", (int)hits);
    hits = 0;
    on(SIGUSR1, nodefer_handler, SA_NODEFER);
    raise(SIGUSR1);
    say("SA_NODEFER: blocked inside %s, runs %d", nested_blocked == 1 ? "yes" : "no", (int)hits);
}

static volatile sig_atomic_t got_value;

static void info_handler(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    (void)ctx;
    got_value = si->si_value.sival_int;
    hits2 = si->si_code == SI_QUEUE;
}

static void *queue_to_process(void *arg)
{
    (void)arg;
    msleep(100);
    sigqueue(getpid(), SIGUSR1, (union sigval){.sival_int = 1234});
    return NULL;
}

static void sa_siginfo_sigqueue(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = info_handler;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR1, &sa, NULL);
    mask1(SIG_BLOCK, SIGUSR1);
    pthread_t t = spawn(queue_to_process, NULL);
    join(t);
    mask1(SIG_UNBLOCK, SIGUSR1);
    say("value %d SI_QUEUE %s", (int)got_value, hits2 ? "yes" : "no");
}

static void *kill_process(void *arg)
{
    (void)arg;
    mask1(SIG_BLOCK, SIGUSR1);
    msleep(100);
    kill(getpid(), SIGUSR1);
    return NULL;
}

/* kill() to the process while only main leaves the signal unblocked. */
static void kill_process_main_unblocked(void)
{
    MUST(pipe(pfd) == 0);
    on(SIGUSR1, h, 0);
    pthread_t t = spawn(kill_process, NULL);
    char c;
    CALL("main read", read(pfd[0], &c, 1));
    join(t);
    say("handler ran %d", (int)hits);
}

static void sigpipe_ignored_and_handled(void)
{
    int p[2];
    MUST(pipe(p) == 0);
    close(p[0]);
    signal(SIGPIPE, SIG_IGN);
    CALL("write ignored", write(p[1], "x", 1));
    on(SIGPIPE, h, 0);
    CALL("write handled", write(p[1], "x", 1));
    say("handler ran %d", (int)hits);
}

static void usr2_handler(int sig)
{
    (void)sig;
    hits2++;
}

static void usr1_raises_usr2(int sig)
{
    (void)sig;
    hits++;
    raise(SIGUSR2);
    hits2 *= 10;
}

static void nested_signals(void)
{
    on(SIGUSR1, usr1_raises_usr2, 0);
    on(SIGUSR2, usr2_handler, 0);
    raise(SIGUSR1);
    say("usr1 %d usr2 then x10 = %d", (int)hits, (int)hits2);
}

static void do_accept(void)
{
    int port;
    int l = tcp_listener(&port);
    CALL("accept", accept(l, NULL, NULL));
}

static void accept_restart_still_eintr_no(void)
{
    interrupt_main(0, do_accept, 0);
}

static void do_waitpid(void)
{
    pid_t pid = fork();
    MUST(pid >= 0);
    if (pid == 0) {
        msleep(400);
        _exit(0);
    }
    CALL("waitpid", waitpid(pid, NULL, 0));
    int st;
    waitpid(pid, &st, 0);
    say("child %s", status_of(st));
}

static void waitpid_no_restart(void)
{
    interrupt_main(0, do_waitpid, 0);
}

static void *sleeper_thread(void *arg)
{
    (void)arg;
    gate_open(&g1);
    struct timespec ts = {3, 0}, rem;
    CALL("t: nanosleep", nanosleep(&ts, &rem));
    return NULL;
}

static void *counter_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10; i++)
        msleep(30);
    say("other thread kept running");
    return NULL;
}

/* One thread is interrupted; another one on the same runtime is not disturbed. */
static void signal_one_of_two(void)
{
    on(SIGUSR1, h, 0);
    gate_init(&g1);
    pthread_t s = spawn(sleeper_thread, NULL);
    gate_wait(&g1);
    pthread_t c2 = spawn(counter_thread, NULL);
    SETTLE();
    pthread_kill(s, SIGUSR1);
    join(s);
    join(c2);
    say("handler ran %d", (int)hits);
}

DIFF_MAIN(S(read_no_restart), S(read_restart), S(recv_no_restart), S(recv_restart),
          S(sleep_interrupted), S(nanosleep_interrupted), S(usleep_interrupted),
          S(poll_restart_still_eintr), S(select_restart_still_eintr), S(epoll_restart_still_eintr),
          S(sem_wait_no_restart), S(sem_wait_restart), S(cond_wait_not_interrupted), S(alarm_read),
          S(pthread_kill_blocked_thread), S(pthread_kill_blocked_thread_restart),
          S(raise_in_thread), S(sigprocmask_round_trip), S(pthread_sigmask_per_thread),
          S(new_thread_inherits_mask), S(sigchld_handler), S(sigaction_round_trip),
          S(sa_resethand), S(sa_nodefer), S(sa_siginfo_sigqueue), S(kill_process_main_unblocked),
          S(sigpipe_ignored_and_handled), S(nested_signals), S(accept_restart_still_eintr_no),
          S(waitpid_no_restart), S(signal_one_of_two))
