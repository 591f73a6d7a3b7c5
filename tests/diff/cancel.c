/* Cancellation: at each cancellation point, cleanup handlers, state and type. */
#include "sync_kit.h"

#include <sys/epoll.h>

static struct gate ready, g2;
static int pfd[2];
static int cfd, sfd, lfd;
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t c = PTHREAD_COND_INITIALIZER;
static sem_t sem;
static pthread_t other;
static pid_t child;

static void cleanup(void *arg)
{
    say("cleanup: %s", (const char *)arg);
}

typedef void (*blocker)(void);

static void *cancel_body(void *arg)
{
    blocker fn = (blocker)arg;
    pthread_cleanup_push(cleanup, "ran");
    gate_open(&ready);
    fn();
    say("not reached: the call returned");
    pthread_cleanup_pop(0);
    return NULL;
}

/* Starts a thread that blocks in `fn`, cancels it and joins. */
static void cancel_at(blocker fn)
{
    gate_init(&ready);
    pthread_t t = spawn(cancel_body, (void *)fn);
    gate_wait(&ready);
    SETTLE();
    int e = pthread_cancel(t);
    void *r = join(t);
    say("cancel = %s joined: %s", ename(e), r == PTHREAD_CANCELED ? "PTHREAD_CANCELED" : "returned");
}

static void b_read(void)
{
    char b;
    read(pfd[0], &b, 1);
}

static void at_read(void)
{
    MUST(pipe(pfd) == 0);
    cancel_at(b_read);
}

static void b_accept(void)
{
    accept(lfd, NULL, NULL);
}

static void at_accept(void)
{
    int port;
    lfd = tcp_listener(&port);
    cancel_at(b_accept);
}

static void b_recv(void)
{
    char b;
    recv(sfd, &b, 1, 0);
}

static void at_recv(void)
{
    tcp_pair(&cfd, &sfd);
    cancel_at(b_recv);
}

static void b_recvfrom(void)
{
    char b;
    recvfrom(sfd, &b, 1, 0, NULL, NULL);
}

static void at_recvfrom_udp(void)
{
    sfd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = loopback(0);
    MUST(bind(sfd, (struct sockaddr *)&a, sizeof a) == 0);
    cancel_at(b_recvfrom);
}

static void b_write_full(void)
{
    static char big[65536];
    for (;;)
        write(pfd[1], big, sizeof big);
}

static void at_write_full_pipe(void)
{
    MUST(pipe(pfd) == 0);
    cancel_at(b_write_full);
}

static void b_sleep(void)
{
    sleep(30);
}

static void at_sleep(void)
{
    cancel_at(b_sleep);
}

static void b_usleep(void)
{
    usleep(30000000);
}

static void at_usleep(void)
{
    cancel_at(b_usleep);
}

static void b_nanosleep(void)
{
    struct timespec ts = {30, 0};
    nanosleep(&ts, NULL);
}

static void at_nanosleep(void)
{
    cancel_at(b_nanosleep);
}

static void b_clock_nanosleep(void)
{
    struct timespec ts = in_ms(CLOCK_MONOTONIC, 30000);
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

static void at_clock_nanosleep(void)
{
    cancel_at(b_clock_nanosleep);
}

static void b_poll(void)
{
    struct pollfd p = {pfd[0], POLLIN, 0};
    poll(&p, 1, 30000);
}

static void at_poll(void)
{
    MUST(pipe(pfd) == 0);
    cancel_at(b_poll);
}

static void b_ppoll(void)
{
    struct pollfd p = {pfd[0], POLLIN, 0};
    ppoll(&p, 1, NULL, NULL);
}

static void at_ppoll(void)
{
    MUST(pipe(pfd) == 0);
    cancel_at(b_ppoll);
}

static void b_select(void)
{
    fd_set r;
    FD_ZERO(&r);
    FD_SET(pfd[0], &r);
    select(pfd[0] + 1, &r, NULL, NULL, NULL);
}

static void at_select(void)
{
    MUST(pipe(pfd) == 0);
    cancel_at(b_select);
}

static void b_pselect(void)
{
    fd_set r;
    FD_ZERO(&r);
    FD_SET(pfd[0], &r);
    sigset_t none;
    sigemptyset(&none);
    pselect(pfd[0] + 1, &r, NULL, NULL, NULL, &none);
}

static void at_pselect(void)
{
    MUST(pipe(pfd) == 0);
    cancel_at(b_pselect);
}

static void b_epoll_wait(void)
{
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    epoll_ctl(ep, EPOLL_CTL_ADD, pfd[0], &ev);
    epoll_wait(ep, &ev, 1, -1);
}

static void at_epoll_wait(void)
{
    MUST(pipe(pfd) == 0);
    cancel_at(b_epoll_wait);
}

static void *wait_g2(void *arg)
{
    (void)arg;
    gate_wait(&g2);
    return (void *)3L;
}

static void b_join(void)
{
    pthread_join(other, NULL);
}

/* The cancelled joiner does not consume the target: main joins it after. */
static void at_pthread_join(void)
{
    gate_init(&g2);
    other = spawn(wait_g2, NULL);
    cancel_at(b_join);
    gate_open(&g2);
    say("target still joinable: %ld", (long)join(other));
}

static void unlock_m(void *arg)
{
    (void)arg;
    say("cleanup: unlock");
    pthread_mutex_unlock(&m);
}

static void b_cond_wait(void)
{
    pthread_mutex_lock(&m);
    pthread_cleanup_push(unlock_m, NULL);
    for (;;)
        pthread_cond_wait(&c, &m);
    pthread_cleanup_pop(0);
}

/* The mutex is held again when the cleanup handler runs. */
static void at_cond_wait(void)
{
    cancel_at(b_cond_wait);
    PCALL("trylock after", pthread_mutex_trylock(&m));
}

static void b_cond_timedwait(void)
{
    pthread_mutex_lock(&m);
    pthread_cleanup_push(unlock_m, NULL);
    struct timespec d = in_ms(CLOCK_REALTIME, 30000);
    for (;;)
        pthread_cond_timedwait(&c, &m, &d);
    pthread_cleanup_pop(0);
}

static void at_cond_timedwait(void)
{
    cancel_at(b_cond_timedwait);
    PCALL("trylock after", pthread_mutex_trylock(&m));
}

static void b_sem_wait(void)
{
    sem_wait(&sem);
}

static void at_sem_wait(void)
{
    sem_init(&sem, 0, 0);
    cancel_at(b_sem_wait);
    int v;
    sem_getvalue(&sem, &v);
    say("value = %d", v);
}

static void b_sem_timedwait(void)
{
    struct timespec d = in_ms(CLOCK_REALTIME, 30000);
    sem_timedwait(&sem, &d);
}

static void at_sem_timedwait(void)
{
    sem_init(&sem, 0, 0);
    cancel_at(b_sem_timedwait);
}

static void b_sigwait(void)
{
    sigset_t s;
    int sig;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    sigwait(&s, &sig);
}

static void at_sigwait(void)
{
    mask1(SIG_BLOCK, SIGUSR1);
    cancel_at(b_sigwait);
}

static void b_pause(void)
{
    pause();
}

static void at_pause(void)
{
    cancel_at(b_pause);
}

static void b_sigsuspend(void)
{
    sigset_t s;
    sigemptyset(&s);
    sigsuspend(&s);
}

static void at_sigsuspend(void)
{
    cancel_at(b_sigsuspend);
}

static void b_waitpid(void)
{
    waitpid(child, NULL, 0);
}

static void at_waitpid(void)
{
    child = fork();
    MUST(child >= 0);
    if (child == 0) {
        pause();
        _exit(0);
    }
    cancel_at(b_waitpid);
    kill(child, SIGKILL);
    int st;
    MUST(waitpid(child, &st, 0) == child);
    say("child %s", status_of(st));
}

static void *three_handlers(void *arg)
{
    (void)arg;
    pthread_cleanup_push(cleanup, "first pushed");
    pthread_cleanup_push(cleanup, "second pushed");
    pthread_cleanup_push(cleanup, "third pushed");
    gate_open(&ready);
    for (;;)
        msleep(1000);
    pthread_cleanup_pop(0);
    pthread_cleanup_pop(0);
    pthread_cleanup_pop(0);
    return NULL;
}

static void cleanup_order(void)
{
    gate_init(&ready);
    pthread_t t = spawn(three_handlers, NULL);
    gate_wait(&ready);
    SETTLE();
    pthread_cancel(t);
    say("joined: %s", join(t) == PTHREAD_CANCELED ? "PTHREAD_CANCELED" : "returned");
}

static void *pops(void *arg)
{
    (void)arg;
    pthread_cleanup_push(cleanup, "popped with 1");
    pthread_cleanup_push(cleanup, "popped with 0");
    pthread_cleanup_pop(0);
    pthread_cleanup_pop(1);
    pthread_cleanup_push(cleanup, "run by pthread_exit");
    pthread_exit((void *)8L);
    pthread_cleanup_pop(0);
    return NULL;
}

static void cleanup_pop_and_exit(void)
{
    say("value = %ld", (long)join(spawn(pops, NULL)));
}

static void *disabled_sleeper(void *arg)
{
    (void)arg;
    int old;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
    say("t: old state enabled %s", old == PTHREAD_CANCEL_ENABLE ? "yes" : "no");
    pthread_cleanup_push(cleanup, "ran");
    gate_open(&ready);
    long long t0 = now_ms();
    int r = usleep(300000);
    say("t: usleep = %d, slept it all %s", r, took(t0, 250, 5000));
    pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &old);
    say("t: enabled again (old disabled %s)", old == PTHREAD_CANCEL_DISABLE ? "yes" : "no");
    pthread_testcancel();
    say("not reached");
    pthread_cleanup_pop(0);
    return NULL;
}

static void disable_then_enable(void)
{
    gate_init(&ready);
    pthread_t t = spawn(disabled_sleeper, NULL);
    gate_wait(&ready);
    SETTLE();
    int e = pthread_cancel(t);
    say("cancel = %s joined: %s", ename(e), join(t) == PTHREAD_CANCELED ? "PTHREAD_CANCELED" : "returned");
}

static volatile unsigned long spins;

static void *async_spinner(void *arg)
{
    (void)arg;
    int old;
    pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, &old);
    say("t: old type deferred %s", old == PTHREAD_CANCEL_DEFERRED ? "yes" : "no");
    gate_open(&ready);
    for (;;)
        spins++;
    return NULL;
}

/* Asynchronous cancellation stops a loop that makes no calls at all. */
static void async_busy_loop(void)
{
    gate_init(&ready);
    pthread_t t = spawn(async_spinner, NULL);
    gate_wait(&ready);
    SETTLE();
    pthread_cancel(t);
    say("joined: %s", join(t) == PTHREAD_CANCELED ? "PTHREAD_CANCELED" : "returned");
}

static void *testcancel_loop(void *arg)
{
    (void)arg;
    pthread_cleanup_push(cleanup, "ran");
    gate_open(&ready);
    for (;;) {
        for (volatile int i = 0; i < 10000; i++)
            ;
        pthread_testcancel();
        sched_yield();
    }
    pthread_cleanup_pop(0);
    return NULL;
}

static void testcancel_in_loop(void)
{
    gate_init(&ready);
    pthread_t t = spawn(testcancel_loop, NULL);
    gate_wait(&ready);
    SETTLE();
    pthread_cancel(t);
    say("joined: %s", join(t) == PTHREAD_CANCELED ? "PTHREAD_CANCELED" : "returned");
}

static void *first_call_reads(void *arg)
{
    (void)arg;
    char b;
    read(pfd[0], &b, 1);
    return (void *)1L;
}

/* Cancelled before it ever ran: it stops at its first cancellation point. */
static void cancel_before_start(void)
{
    MUST(pipe(pfd) == 0);
    pthread_t t = spawn(first_call_reads, NULL);
    PCALL("cancel", pthread_cancel(t));
    say("joined: %s", join(t) == PTHREAD_CANCELED ? "PTHREAD_CANCELED" : "returned");
}

static void *returns_at_once(void *arg)
{
    (void)arg;
    return (void *)4L;
}

static void cancel_finished(void)
{
    pthread_t t = spawn(returns_at_once, NULL);
    msleep(100);
    PCALL("cancel finished", pthread_cancel(t));
    say("value = %ld", (long)join(t));
}

static void *self_cancel(void *arg)
{
    (void)arg;
    pthread_cleanup_push(cleanup, "ran");
    PCALL("cancel self", pthread_cancel(pthread_self()));
    say("t: still running until a cancellation point");
    pthread_testcancel();
    pthread_cleanup_pop(0);
    return NULL;
}

static void cancel_self(void)
{
    say("joined: %s", join(spawn(self_cancel, NULL)) == PTHREAD_CANCELED ? "PTHREAD_CANCELED" : "returned");
}

/* A cancellation already pending when a cancellation point is called acts
 * before the call, even one that would complete at once; other calls leave
 * it pending. The thread cancels itself, makes one call, then records that
 * it came back (no write in between: say() is a cancellation point too). */
static volatile int returned;

static void pending_cleanup(void *arg)
{
    (void)arg;
    say("cleanup: the call %s; pfd[0] %s", returned ? "returned" : "did not return",
        fcntl(pfd[0], F_GETFD) >= 0 ? "open" : "closed");
}

static void *pending_body(void *arg)
{
    blocker fn = (blocker)arg;
    returned = 0;
    pthread_cleanup_push(pending_cleanup, NULL);
    pthread_cancel(pthread_self());
    fn();
    returned = 1;
    pthread_testcancel();
    pthread_cleanup_pop(0);
    return NULL;
}

static void pending_at(blocker fn)
{
    MUST(pipe(pfd) == 0);
    MUST(write(pfd[1], "x", 1) == 1); /* readable: a read would not wait */
    say("joined: %s", join(spawn(pending_body, (void *)fn)) == PTHREAD_CANCELED ? "PTHREAD_CANCELED" : "returned");
    close(pfd[0]);
    close(pfd[1]);
}

static void p_close(void)
{
    close(pfd[0]);
}

static void pending_close_keeps_fd(void)
{
    pending_at(p_close);
}

static void p_poll_ready(void)
{
    struct pollfd p = {.fd = pfd[1], .events = POLLOUT};
    poll(&p, 1, 0);
}

static void pending_poll_ready(void)
{
    pending_at(p_poll_ready);
}

static void p_select_ready(void)
{
    fd_set w;
    FD_ZERO(&w);
    FD_SET(pfd[1], &w);
    struct timeval tv = {0, 0};
    select(pfd[1] + 1, NULL, &w, NULL, &tv);
}

static void pending_select_ready(void)
{
    pending_at(p_select_ready);
}

static void p_waitpid_wnohang(void)
{
    int st;
    waitpid(-1, &st, WNOHANG);
}

static void pending_waitpid_wnohang(void)
{
    pending_at(p_waitpid_wnohang);
}

static void p_open(void)
{
    open("/dev/null", O_RDONLY);
}

static void pending_open(void)
{
    pending_at(p_open);
}

static void p_fsync(void)
{
    fsync(pfd[0]);
}

static void pending_fsync(void)
{
    pending_at(p_fsync);
}

static void p_read_ready(void)
{
    char b;
    read(pfd[0], &b, 1);
}

static void pending_read_ready(void)
{
    pending_at(p_read_ready);
}

static void p_nonblocking(void)
{
    int sv[2];
    MUST(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
    accept(sv[0], NULL, NULL);
}

static void pending_accept_nonblocking(void)
{
    pending_at(p_nonblocking);
}

static void p_recv_dontwait(void)
{
    int sv[2];
    char b;
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    recv(sv[0], &b, 1, MSG_DONTWAIT);
}

static void pending_recv_dontwait(void)
{
    pending_at(p_recv_dontwait);
}

static void p_nanosleep_zero(void)
{
    struct timespec ts = {0, 0};
    nanosleep(&ts, NULL);
}

static void pending_nanosleep_zero(void)
{
    pending_at(p_nanosleep_zero);
}

static void p_no_points(void)
{
    int p2[2];
    MUST(pipe2(p2, O_CLOEXEC) == 0);
    int d = dup(p2[0]);
    MUST(d >= 0);
    MUST(fcntl(d, F_GETFL) >= 0);
    MUST(dup2(d, p2[1]) == p2[1]);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    MUST(s >= 0);
    pthread_mutex_lock(&m);
    pthread_mutex_unlock(&m);
}

static void pending_not_points(void)
{
    pending_at(p_no_points);
}

static void *lock_then_read(void *arg)
{
    (void)arg;
    pthread_cleanup_push(cleanup, "ran");
    gate_open(&ready);
    pthread_mutex_lock(&m);
    say("t: got the mutex (lock is no cancellation point)");
    pthread_mutex_unlock(&m);
    char b;
    read(pfd[0], &b, 1);
    pthread_cleanup_pop(0);
    return NULL;
}

static void not_a_point_mutex_lock(void)
{
    MUST(pipe(pfd) == 0);
    gate_init(&ready);
    pthread_mutex_lock(&m);
    pthread_t t = spawn(lock_then_read, NULL);
    gate_wait(&ready);
    SETTLE();
    pthread_cancel(t);
    msleep(50);
    say("main: unlock");
    pthread_mutex_unlock(&m);
    say("joined: %s", join(t) == PTHREAD_CANCELED ? "PTHREAD_CANCELED" : "returned");
}

static void slow_cleanup(void *arg)
{
    (void)arg;
    msleep(100);
    say("cleanup: slept, writing");
    MUST(write(pfd[1], "c", 1) == 1);
}

static void *blocks_with_slow_cleanup(void *arg)
{
    (void)arg;
    pthread_cleanup_push(slow_cleanup, NULL);
    gate_open(&ready);
    for (;;)
        msleep(1000);
    pthread_cleanup_pop(0);
    return NULL;
}

/* A cleanup handler that itself sleeps and writes. */
static void cleanup_blocks(void)
{
    MUST(pipe(pfd) == 0);
    gate_init(&ready);
    pthread_t t = spawn(blocks_with_slow_cleanup, NULL);
    gate_wait(&ready);
    SETTLE();
    pthread_cancel(t);
    char b;
    CALL("main: read", read(pfd[0], &b, 1));
    say("joined: %s", join(t) == PTHREAD_CANCELED ? "PTHREAD_CANCELED" : "returned");
}

static pthread_key_t key;

static void key_dtor(void *v)
{
    say("key destructor: %s", (const char *)v);
}

static void *with_key(void *arg)
{
    (void)arg;
    pthread_setspecific(key, "value");
    gate_open(&ready);
    for (;;)
        msleep(1000);
    return NULL;
}

static void cancel_runs_key_destructors(void)
{
    pthread_key_create(&key, key_dtor);
    gate_init(&ready);
    pthread_t t = spawn(with_key, NULL);
    gate_wait(&ready);
    SETTLE();
    pthread_cancel(t);
    say("joined: %s", join(t) == PTHREAD_CANCELED ? "PTHREAD_CANCELED" : "returned");
}

static void post_sem(void *arg)
{
    sem_post(arg);
}

static void *detached_cancelled(void *arg)
{
    (void)arg;
    pthread_cleanup_push(post_sem, &sem);
    gate_open(&ready);
    for (;;)
        msleep(1000);
    pthread_cleanup_pop(0);
    return NULL;
}

static void cancel_detached(void)
{
    sem_init(&sem, 0, 0);
    gate_init(&ready);
    pthread_t t = spawn(detached_cancelled, NULL);
    pthread_detach(t);
    gate_wait(&ready);
    SETTLE();
    PCALL("cancel", pthread_cancel(t));
    CALL("sem_wait for its cleanup", sem_wait(&sem));
}

static void state_type_values(void)
{
    int old;
    PCALL("setcancelstate bad", pthread_setcancelstate(7, &old));
    PCALL("setcanceltype bad", pthread_setcanceltype(7, &old));
    PCALL("setcancelstate disable", pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old));
    say("old enable %s", old == PTHREAD_CANCEL_ENABLE ? "yes" : "no");
    PCALL("setcancelstate enable", pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL));
}

DIFF_MAIN(S(at_read), S(at_accept), S(at_recv), S(at_recvfrom_udp), S(at_write_full_pipe),
          S(at_sleep), S(at_usleep), S(at_nanosleep), S(at_clock_nanosleep), S(at_poll),
          S(at_ppoll), S(at_select), S(at_pselect), S(at_epoll_wait), S(at_pthread_join),
          S(at_cond_wait), S(at_cond_timedwait), S(at_sem_wait), S(at_sem_timedwait),
          S(at_sigwait), S(at_pause), S(at_sigsuspend), S(at_waitpid), S(cleanup_order),
          S(cleanup_pop_and_exit), S(disable_then_enable), S(async_busy_loop),
          S(testcancel_in_loop), S(cancel_before_start), S(cancel_finished), S(cancel_self),
          S(not_a_point_mutex_lock), S(cleanup_blocks), S(cancel_runs_key_destructors),
          S(cancel_detached), S(state_type_values), S(pending_close_keeps_fd),
          S(pending_poll_ready), S(pending_select_ready), S(pending_waitpid_wnohang),
          S(pending_open), S(pending_fsync), S(pending_read_ready),
          S(pending_accept_nonblocking), S(pending_recv_dontwait), S(pending_nanosleep_zero),
          S(pending_not_points))
