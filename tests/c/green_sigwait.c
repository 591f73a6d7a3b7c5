/* The dedicated signal-thread pattern: every thread blocks SIGUSR1 and SIGTERM,
 * one thread waits for them with sigwaitinfo/sigtimedwait/sigwait while the
 * others go on; main sends with pthread_kill, kill and sigqueue. A handled
 * signal (SIGUSR2, not blocked) ends the waiter's sigwaitinfo with EINTR. The
 * output is the same natively and with green threads on any number of workers:
 * every step waits for the previous one's acknowledgement. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static sigset_t waited;
static int to_main[2];
static volatile int ticks, stop;
static volatile sig_atomic_t usr2_handled;

static void on_usr2(int sig)
{
    (void)sig;
    usr2_handled++;
}

static const char *code_name(int code)
{
    switch (code) {
    case SI_USER: return "SI_USER";
    case SI_TKILL: return "SI_TKILL";
    case SI_QUEUE: return "SI_QUEUE";
    default: return "other";
    }
}

static void say(int fd)
{
    char c = 'x';
    if (write(fd, &c, 1) != 1)
        perror("write");
}

static void hear(int fd)
{
    char c;
    if (read(fd, &c, 1) != 1)
        perror("read");
}

static void *ticker(void *arg)
{
    (void)arg;
    while (!stop) {
        ticks++;
        usleep(1000);
    }
    return NULL;
}

static void *waiter(void *arg)
{
    (void)arg;
    siginfo_t si;
    struct timespec short_wait = {0, 50 * 1000 * 1000};
    errno = 0;
    int r = sigtimedwait(&waited, &si, &short_wait);
    printf("sigtimedwait, nothing sent: %d %s\n", r, r < 0 ? strerrorname_np(errno) : "-");
    struct timespec bad = {0, 2000 * 1000 * 1000L};
    errno = 0;
    r = sigtimedwait(&waited, &si, &bad);
    printf("sigtimedwait, bad timeout: %d %s\n", r, r < 0 ? strerrorname_np(errno) : "-");
    int before = ticks;
    say(to_main[1]);
    for (int i = 0; i < 3; i++) {
        memset(&si, 0, sizeof si);
        r = sigwaitinfo(&waited, &si);
        printf("sigwaitinfo: %s code %s value %d\n", r == si.si_signo ? strsignal(r) : "mismatch",
               code_name(si.si_code), si.si_code == SI_QUEUE ? si.si_value.sival_int : 0);
        say(to_main[1]);
    }
    printf("others ran meanwhile: %s\n", ticks > before ? "yes" : "no");
    say(to_main[1]);
    errno = 0;
    r = sigwaitinfo(&waited, &si);
    printf("sigwaitinfo, handler ran: %d %s, handled %d\n", r, r < 0 ? strerrorname_np(errno) : "-",
           (int)usr2_handled);
    say(to_main[1]);
    int sig = 0;
    r = sigwait(&waited, &sig);
    printf("sigwait: %d %s\n", r, strsignal(sig));
    struct timespec long_wait = {30, 0};
    r = sigtimedwait(&waited, &si, &long_wait);
    printf("sigtimedwait: %s\n", r > 0 ? strsignal(r) : strerrorname_np(errno));
    return NULL;
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    sigemptyset(&waited);
    sigaddset(&waited, SIGUSR1);
    sigaddset(&waited, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &waited, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);
    if (pipe(to_main)) {
        perror("pipe");
        return 2;
    }
    pthread_t t, w;
    pthread_create(&t, NULL, ticker, NULL);
    pthread_create(&w, NULL, waiter, NULL);
    /* Each signal is sent a while after the waiter started waiting. */
    hear(to_main[0]);
    usleep(20 * 1000);
    pthread_kill(w, SIGUSR1);
    hear(to_main[0]);
    usleep(20 * 1000);
    kill(getpid(), SIGUSR1);
    hear(to_main[0]);
    usleep(20 * 1000);
    union sigval v = {.sival_int = 42};
    sigqueue(getpid(), SIGUSR1, v);
    hear(to_main[0]);
    hear(to_main[0]);
    /* Give the waiter time to be in sigwaitinfo when the handler runs. */
    usleep(200 * 1000);
    pthread_kill(w, SIGUSR2);
    hear(to_main[0]);
    /* A handler during sigwait does not end it. */
    usleep(100 * 1000);
    pthread_kill(w, SIGUSR2);
    usleep(100 * 1000);
    pthread_kill(w, SIGTERM);
    kill(getpid(), SIGUSR1);
    pthread_join(w, NULL);
    stop = 1;
    pthread_join(t, NULL);
    printf("handled: %d\n", (int)usr2_handled);
    printf("done\n");
    return 0;
}
