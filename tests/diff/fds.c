/* signalfd, timerfd and eventfd, read by threads that block on them. */
#include "sync_kit.h"

#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>

static struct gate g1;

static void signalfd_read_info(void)
{
    mask1(SIG_BLOCK, SIGUSR1);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    int fd = signalfd(-1, &s, 0);
    MUST(fd >= 0);
    sigqueue(getpid(), SIGUSR1, (union sigval){.sival_int = 5});
    struct signalfd_siginfo si;
    CALL("read", read(fd, &si, sizeof si));
    say("signo USR1 %s code SI_QUEUE %s int %d", si.ssi_signo == SIGUSR1 ? "yes" : "no",
        si.ssi_code == SI_QUEUE ? "yes" : "no", si.ssi_int);
}

static int sfd;

static void *signalfd_reader(void *arg)
{
    (void)arg;
    struct signalfd_siginfo si;
    gate_open(&g1);
    CALL("t: read", read(sfd, &si, sizeof si));
    say("t: got %s", sigabbrev_np(si.ssi_signo));
    return NULL;
}

/* A thread blocks reading the signalfd; main sends the signal. */
static void signalfd_blocking_thread(void)
{
    mask1(SIG_BLOCK, SIGUSR2);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR2);
    sfd = signalfd(-1, &s, 0);
    MUST(sfd >= 0);
    gate_init(&g1);
    pthread_t t = spawn(signalfd_reader, NULL);
    gate_wait(&g1);
    SETTLE();
    say("main: kill");
    kill(getpid(), SIGUSR2);
    join(t);
}

static void signalfd_nonblock(void)
{
    mask1(SIG_BLOCK, SIGUSR1);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    int fd = signalfd(-1, &s, SFD_NONBLOCK);
    struct signalfd_siginfo si;
    CALL("read empty", read(fd, &si, sizeof si));
    say("flags %s", flags_of(fd));
    raise(SIGUSR1);
    CALL("read", read(fd, &si, sizeof si));
    CALL("read short buffer", read(fd, &si, 4));
}

static void *kill_later(void *arg)
{
    msleep(100);
    kill(getpid(), (int)(long)arg);
    return NULL;
}

static void signalfd_poll_wakes(void)
{
    mask1(SIG_BLOCK, SIGUSR1);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    int fd = signalfd(-1, &s, 0);
    struct pollfd p = {fd, POLLIN, 0};
    CALL("poll empty", poll(&p, 1, 100));
    pthread_t t = spawn(kill_later, (void *)(long)SIGUSR1);
    long long t0 = now_ms();
    CALL("poll", poll(&p, 1, 5000));
    say("revents POLLIN %s early %s", p.revents & POLLIN ? "yes" : "no", took(t0, 50, 4000));
    join(t);
}

static void timerfd_one_shot(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, 0);
    MUST(fd >= 0);
    struct itimerspec it = {{0, 0}, {0, 150000000L}};
    CALL("settime", timerfd_settime(fd, 0, &it, NULL));
    uint64_t n = 0;
    long long t0 = now_ms();
    CALL("read", read(fd, &n, sizeof n));
    say("expirations %llu waited %s", (unsigned long long)n, took(t0, 120, 3000));
}

static void timerfd_periodic(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec it = {{0, 50000000L}, {0, 50000000L}};
    timerfd_settime(fd, 0, &it, NULL);
    msleep(320);
    uint64_t n = 0;
    CALL("read", read(fd, &n, sizeof n));
    say("count in [3,10] %s", n >= 3 && n <= 10 ? "yes" : "no");
    long long t0 = now_ms();
    CALL("read next", read(fd, &n, sizeof n));
    say("next one soon %s count %llu", took(t0, 0, 1000), (unsigned long long)n);
}

static void timerfd_nonblock(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    uint64_t n;
    CALL("read unarmed", read(fd, &n, sizeof n));
    struct itimerspec it = {{0, 0}, {0, 50000000L}};
    timerfd_settime(fd, 0, &it, NULL);
    CALL("read armed, early", read(fd, &n, sizeof n));
    msleep(120);
    CALL("read expired", read(fd, &n, sizeof n));
    CALL("read short", read(fd, &n, 4));
    say("flags %s", flags_of(fd));
}

static void timerfd_gettime_disarm(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec it = {{0, 0}, {10, 0}}, cur;
    timerfd_settime(fd, 0, &it, NULL);
    timerfd_gettime(fd, &cur);
    say("armed: remaining in (5s,10s] %s", cur.it_value.tv_sec >= 5 ? "yes" : "no");
    struct itimerspec zero = {{0, 0}, {0, 0}};
    timerfd_settime(fd, 0, &zero, &cur);
    say("old value returned %s", cur.it_value.tv_sec >= 5 ? "yes" : "no");
    timerfd_gettime(fd, &cur);
    say("disarmed %s", cur.it_value.tv_sec == 0 && cur.it_value.tv_nsec == 0 ? "yes" : "no");
    CALL("create bad clock", timerfd_create(CLOCK_PROCESS_CPUTIME_ID, 0));
    struct itimerspec bad = {{0, 0}, {0, 2000000000L}};
    CALL("settime bad nsec", timerfd_settime(fd, 0, &bad, NULL));
}

static void timerfd_absolute(void)
{
    int fd = timerfd_create(CLOCK_REALTIME, 0);
    struct itimerspec it = {{0, 0}, in_ms(CLOCK_REALTIME, 150)};
    CALL("settime abstime", timerfd_settime(fd, TFD_TIMER_ABSTIME, &it, NULL));
    uint64_t n;
    long long t0 = now_ms();
    CALL("read", read(fd, &n, sizeof n));
    say("waited %s", took(t0, 100, 3000));
    struct itimerspec past = {{0, 0}, {1, 0}};
    timerfd_settime(fd, TFD_TIMER_ABSTIME, &past, NULL);
    t0 = now_ms();
    CALL("read past", read(fd, &n, sizeof n));
    say("at once %s", took(t0, 0, 1000));
}

static int tfd;

static void *timer_reader(void *arg)
{
    (void)arg;
    uint64_t n;
    CALL("t: read", read(tfd, &n, sizeof n));
    say("t: expired");
    return NULL;
}

static void *steps(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++) {
        say("worker: step %d", i);
        msleep(30);
    }
    return NULL;
}

/* A thread waits on a timerfd while another thread works. */
static void timerfd_thread_waits(void)
{
    tfd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec it = {{0, 0}, {0, 250000000L}};
    timerfd_settime(tfd, 0, &it, NULL);
    pthread_t a = spawn(timer_reader, NULL);
    pthread_t b = spawn(steps, NULL);
    join(b);
    join(a);
}

/* A buffer under 8 bytes is EINVAL at once, even on a blocking, unexpired timer. */
static void timerfd_short_read_blocking(void)
{
    int fd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec it = {{0, 0}, {5, 0}};
    timerfd_settime(fd, 0, &it, NULL);
    char b[4];
    long long t0 = now_ms();
    CALL("read 4 bytes", read(fd, b, sizeof b));
    say("at once %s", took(t0, 0, 1000));
}

static void eventfd_counter(void)
{
    int fd = eventfd(0, 0);
    uint64_t v = 3;
    CALL("write 3", write(fd, &v, sizeof v));
    v = 4;
    CALL("write 4", write(fd, &v, sizeof v));
    CALL("read", read(fd, &v, sizeof v));
    say("value %llu", (unsigned long long)v);
    CALL("read short", read(fd, &v, 4));
    v = UINT64_MAX;
    CALL("write max", write(fd, &v, sizeof v));
}

static void eventfd_semaphore(void)
{
    int fd = eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK);
    uint64_t v;
    for (int i = 0; i < 4; i++) {
        v = 0;
        long r = CALL("read", read(fd, &v, sizeof v));
        if (r > 0)
            say("value %llu", (unsigned long long)v);
    }
}

static int efd;

static void *eventfd_writer(void *arg)
{
    (void)arg;
    msleep(100);
    uint64_t v = 42;
    say("t: write");
    MUST(write(efd, &v, sizeof v) == sizeof v);
    return NULL;
}

static void eventfd_blocking_read(void)
{
    efd = eventfd(0, 0);
    pthread_t t = spawn(eventfd_writer, NULL);
    uint64_t v;
    CALL("read", read(efd, &v, sizeof v));
    say("value %llu", (unsigned long long)v);
    join(t);
}

static void *eventfd_reader(void *arg)
{
    (void)arg;
    uint64_t v;
    msleep(100);
    say("t: read");
    MUST(read(efd, &v, sizeof v) == sizeof v);
    return NULL;
}

/* A write that would overflow the counter blocks until a reader drains it. */
static void eventfd_blocking_write(void)
{
    efd = eventfd(0, 0);
    uint64_t v = UINT64_MAX - 1;
    MUST(write(efd, &v, sizeof v) == sizeof v);
    pthread_t t = spawn(eventfd_reader, NULL);
    v = 5;
    CALL("write blocks", write(efd, &v, sizeof v));
    join(t);
    CALL("read", read(efd, &v, sizeof v));
    say("value %llu", (unsigned long long)v);
}

static void eventfd_nonblock(void)
{
    int fd = eventfd(0, EFD_NONBLOCK);
    uint64_t v = UINT64_MAX - 1;
    CALL("read empty", read(fd, &v, sizeof v));
    v = UINT64_MAX - 1;
    CALL("write to max", write(fd, &v, sizeof v));
    v = 1;
    CALL("write over", write(fd, &v, sizeof v));
    say("flags %s", flags_of(fd));
}

static void *poster(void *arg)
{
    (void)arg;
    for (int i = 0; i < 5; i++) {
        uint64_t v = 1;
        msleep(20);
        MUST(write(efd, &v, sizeof v) == sizeof v);
    }
    return NULL;
}

/* A thread waits in epoll for five posts on a semaphore eventfd. */
static void eventfd_epoll_semaphore(void)
{
    efd = eventfd(0, EFD_SEMAPHORE);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev);
    pthread_t t = spawn(poster, NULL);
    int got = 0;
    while (got < 5) {
        if (epoll_wait(ep, &ev, 1, 5000) <= 0)
            break;
        uint64_t v;
        if (read(efd, &v, sizeof v) == sizeof v)
            got += (int)v;
    }
    join(t);
    say("got %d", got);
}

static void *helper_writer(void *arg)
{
    (void)arg;
    msleep(100);
    say("t: eventfd_write");
    MUST(eventfd_write(efd, 7) == 0);
    return NULL;
}

/* glibc's eventfd_read/eventfd_write, after a plain read used the fd: the
 * helper still waits for the writer, and the fd still looks blocking. */
static void eventfd_helpers_block(void)
{
    efd = eventfd(0, 0);
    MUST(eventfd_write(efd, 1) == 0);
    uint64_t v;
    CALL("read", read(efd, &v, sizeof v));
    pthread_t t = spawn(helper_writer, NULL);
    v = 0;
    CALL("eventfd_read", eventfd_read(efd, &v));
    say("value %llu flags %s", (unsigned long long)v, flags_of(efd));
    join(t);
}

/* An 8-byte read on a signalfd is EINVAL at once, signal pending or not. */
static void signalfd_short_read(void)
{
    mask1(SIG_BLOCK, SIGUSR1);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    int fd = signalfd(-1, &s, 0);
    MUST(fd >= 0);
    char b[8];
    long long t0 = now_ms();
    CALL("read 8 bytes", read(fd, b, sizeof b));
    say("at once %s flags %s", took(t0, 0, 1000), flags_of(fd));
}

static void *usr2_sender(void *arg)
{
    (void)arg;
    msleep(100);
    say("t: kill USR2");
    kill(getpid(), SIGUSR2);
    return NULL;
}

/* signalfd on an existing signalfd replaces its mask; the kernel ignores the
 * flags then: SFD_NONBLOCK does not make it non-blocking. */
static void signalfd_reuse_ignores_flags(void)
{
    mask1(SIG_BLOCK, SIGUSR1);
    mask1(SIG_BLOCK, SIGUSR2);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    sfd = signalfd(-1, &s, 0);
    MUST(sfd >= 0);
    sigaddset(&s, SIGUSR2);
    CALL("signalfd again", signalfd(sfd, &s, SFD_NONBLOCK) == sfd ? 0 : -1);
    say("flags %s", flags_of(sfd));
    pthread_t t = spawn(usr2_sender, NULL);
    struct signalfd_siginfo si;
    CALL("read waits", read(sfd, &si, sizeof si));
    say("got %s", sigabbrev_np(si.ssi_signo));
    join(t);
}

static void timerfd_flags(void)
{
    int a = timerfd_create(CLOCK_MONOTONIC, 0), b = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    uint64_t v;
    CALL("read unarmed non-blocking", read(b, &v, sizeof v));
    say("flags %s and %s", flags_of(a), flags_of(b));
}

static char idir[64];

static void *touch_later(void *arg)
{
    (void)arg;
    msleep(100);
    char path[96];
    snprintf(path, sizeof path, "%s/f", idir);
    say("t: create");
    int fd = open(path, O_CREAT | O_WRONLY, 0600);
    MUST(fd >= 0);
    close(fd);
    return NULL;
}

/* inotify: a read waits for an event; one too small for it is EINVAL. */
static void inotify_events(void)
{
    snprintf(idir, sizeof idir, "/tmp/patchall-diff-XXXXXX");
    MUST(mkdtemp(idir) != NULL);
    int fd = inotify_init1(IN_CLOEXEC);
    MUST(fd >= 0);
    MUST(inotify_add_watch(fd, idir, IN_CREATE) >= 0);
    pthread_t t = spawn(touch_later, NULL);
    char small[4];
    CALL("read too small (waits for the event)", read(fd, small, sizeof small));
    join(t);
    union {
        struct inotify_event ev;
        char buf[sizeof(struct inotify_event) + 64];
    } u;
    long r = CALL("read", read(fd, u.buf, sizeof u.buf));
    if (r > 0)
        say("event create %s name %s", u.ev.mask & IN_CREATE ? "yes" : "no", u.ev.name);
    say("flags %s", flags_of(fd));
    char path[96];
    snprintf(path, sizeof path, "%s/f", idir);
    unlink(path);
    rmdir(idir);
}

DIFF_MAIN(S(signalfd_read_info), S(signalfd_blocking_thread), S(signalfd_nonblock),
          S(signalfd_poll_wakes), S(timerfd_one_shot), S(timerfd_periodic), S(timerfd_nonblock),
          S(timerfd_gettime_disarm), S(timerfd_absolute), S(timerfd_thread_waits), S(timerfd_short_read_blocking),
          S(eventfd_counter), S(eventfd_semaphore), S(eventfd_blocking_read),
          S(eventfd_blocking_write), S(eventfd_nonblock), S(eventfd_epoll_semaphore),
          S(eventfd_helpers_block), S(signalfd_short_read), S(signalfd_reuse_ignores_flags),
          S(timerfd_flags), S(inotify_events))
