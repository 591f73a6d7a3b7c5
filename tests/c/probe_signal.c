/* Signal dispositions: what sigaction/signal/sysv_signal/siginterrupt report and
 * do, handler arguments, masks, one-shot handlers, errno across a handler. */
#define _GNU_SOURCE
#include "probe.h"

#include <poll.h>
#include <setjmp.h>

/* siginterrupt is deprecated, and still what old programs call. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

static volatile sig_atomic_t hits, order_pos, depth, max_depth, entries;
static volatile int order[8];
static volatile int seen_signo, seen_code;
static sigjmp_buf jump;

static void h_count(int sig)
{
    (void)sig;
    hits++;
}

static void h_other(int sig)
{
    (void)sig;
}

static void h_info(int sig, siginfo_t *info, void *ctx)
{
    (void)ctx;
    hits++;
    seen_signo = sig == info->si_signo ? sig : -1;
    seen_code = info->si_code;
}

static void h_usr2(int sig)
{
    order[order_pos++] = sig;
}

static void h_usr1_raises_usr2(int sig)
{
    order[order_pos++] = sig;
    raise(SIGUSR2);
    order[order_pos++] = -sig;
}

/* Raises its own signal from inside, three entries in all: nested only if the
 * signal is not blocked during its handler. */
static void h_nested(int sig)
{
    depth++;
    entries++;
    if (depth > max_depth)
        max_depth = depth;
    if (entries < 3)
        raise(sig);
    depth--;
}

static void h_jump(int sig)
{
    siglongjmp(jump, sig);
}

/* Reads whatever is ready in a pipe without ever blocking. */
static void drain(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};
    char c;
    while (poll(&p, 1, 0) == 1 && (p.revents & POLLIN) && read(fd, &c, 1) == 1) {
    }
}

static const char *handler_name(void (*h)(int))
{
    if (h == SIG_DFL)
        return "SIG_DFL";
    if (h == SIG_IGN)
        return "SIG_IGN";
    if (h == h_count)
        return "h_count";
    if (h == h_other)
        return "h_other";
    if (h == (void (*)(int))h_info)
        return "h_info";
    if (h == h_usr2)
        return "h_usr2";
    if (h == h_nested)
        return "h_nested";
    if (h == h_jump)
        return "h_jump";
    if (h == SIG_ERR)
        return "SIG_ERR";
    return "unknown";
}

/* The action the kernel (as libc reports it) holds for `sig`. */
static void show(const char *name, int sig)
{
    struct sigaction cur;
    memset(&cur, 0, sizeof cur);
    errno = 0;
    int r = sigaction(sig, NULL, &cur);
    printf("%s: ret=%d handler=%s restart=%d siginfo=%d resethand=%d nodefer=%d onstack=%d usr2_masked=%d\n",
           name, r, handler_name(cur.sa_handler), !!(cur.sa_flags & SA_RESTART),
           !!(cur.sa_flags & SA_SIGINFO), !!(cur.sa_flags & SA_RESETHAND),
           !!(cur.sa_flags & SA_NODEFER), !!(cur.sa_flags & SA_ONSTACK),
           sigismember(&cur.sa_mask, SIGUSR2));
}

static int install(int sig, void (*h)(int), int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = h;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL);
}

static void dispositions(void)
{
    show("initial_usr1", SIGUSR1);
    CHECK("install_restart", install(SIGUSR1, h_count, SA_RESTART));
    show("after_install_restart", SIGUSR1);
    CHECK("install_plain", install(SIGUSR1, h_other, 0));
    show("after_install_plain", SIGUSR1);

    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    memset(&old, 0, sizeof old);
    sa.sa_sigaction = h_info;
    sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR2);
    CHECK("install_siginfo", sigaction(SIGUSR1, &sa, &old));
    printf("old_of_install_siginfo: handler=%s restart=%d siginfo=%d\n", handler_name(old.sa_handler),
           !!(old.sa_flags & SA_RESTART), !!(old.sa_flags & SA_SIGINFO));
    show("after_install_siginfo", SIGUSR1);

    /* act and old may be the same struct. */
    sa.sa_handler = h_count;
    sa.sa_flags = SA_NODEFER;
    struct sigaction *both = opaque_ptr(&sa);
    CHECK("install_same_struct", sigaction(SIGUSR1, &sa, both));
    printf("same_struct_old: handler=%s siginfo=%d onstack=%d\n", handler_name(sa.sa_handler),
           !!(sa.sa_flags & SA_SIGINFO), !!(sa.sa_flags & SA_ONSTACK));
    show("after_same_struct", SIGUSR1);

    CHECK("install_ign", install(SIGUSR1, SIG_IGN, 0));
    show("after_ign", SIGUSR1);
    hits = 0;
    CHECK("raise_ignored", raise(SIGUSR1));
    printf("ignored_hits: %d\n", (int)hits);
    CHECK("install_dfl", install(SIGUSR1, SIG_DFL, 0));
    show("after_dfl", SIGUSR1);

    CHECK("sigaction_sigkill", install(SIGKILL, h_count, 0));
    CHECK("sigaction_sigstop", install(SIGSTOP, h_count, 0));
    CHECK("sigaction_zero", install(0, h_count, 0));
    CHECK("sigaction_65", install(65, h_count, 0));
    show("sigkill_after_refusal", SIGKILL);
    CHECK("install_segv", install(SIGSEGV, h_count, 0));
    show("after_install_segv", SIGSEGV);
    CHECK("restore_segv", install(SIGSEGV, SIG_DFL, 0));
    CHECK("install_rt", install(SIGRTMIN + 1, h_count, SA_RESTART));
    show("after_install_rt", SIGRTMIN + 1);
    CHECK("install_sigrtmax", install(SIGRTMAX, h_count, 0));
    show("after_install_sigrtmax", SIGRTMAX);
}

static void signal_functions(void)
{
    printf("signal_first: %s\n", handler_name(signal(SIGUSR2, h_count)));
    printf("signal_second: %s\n", handler_name(signal(SIGUSR2, h_other)));
    show("after_signal", SIGUSR2);
    errno = 0;
    void (*refused)(int) = signal(SIGKILL, h_count);
    int refused_errno = errno;
    printf("signal_kill: %s errno=%s\n", handler_name(refused), errname(refused_errno));
    printf("signal_restore: %s\n", handler_name(signal(SIGUSR2, SIG_DFL)));

    /* siginterrupt before signal(): glibc remembers it, signal() then installs
     * without SA_RESTART. */
    CHECK("siginterrupt_on", siginterrupt(SIGALRM, 1));
    printf("signal_after_siginterrupt: %s\n", handler_name(signal(SIGALRM, on_alarm)));
    show("alarm_after_siginterrupt_then_signal", SIGALRM);
    int p[2];
    char buf[4];
    MUST(pipe(p));
    alarm_write_fd = p[1];
    struct itimerval it = {{0, 0}, {0, 50000}};
    MUST(setitimer(ITIMER_REAL, &it, NULL));
    CHECK("read_after_siginterrupt", read(p[0], buf, opaque(sizeof buf)));
    CHECK("siginterrupt_off", siginterrupt(SIGALRM, 0));
    show("alarm_after_siginterrupt_off", SIGALRM);
    printf("signal_after_siginterrupt_off: %s\n", handler_name(signal(SIGALRM, on_alarm)));
    show("alarm_after_signal_again", SIGALRM);
    drain(p[0]);
    MUST(setitimer(ITIMER_REAL, &it, NULL));
    CHECK("read_restarted", read(p[0], buf, opaque(sizeof buf)));
    disarm_alarm();
    CHECK("siginterrupt_bad", siginterrupt(0, 1));
    close(p[0]);
    close(p[1]);

    /* sysv_signal and SA_RESETHAND: one-shot, reset to SIG_DFL by the kernel. */
    hits = 0;
    printf("sysv_signal_first: %s\n", handler_name(sysv_signal(SIGUSR2, h_count)));
    show("after_sysv_signal", SIGUSR2);
    CHECK("raise_sysv", raise(SIGUSR2));
    printf("sysv_hits: %d\n", (int)hits);
    show("after_sysv_delivery", SIGUSR2);
    CHECK("install_resethand", install(SIGUSR2, h_count, SA_RESETHAND | SA_RESTART));
    CHECK("raise_resethand", raise(SIGUSR2));
    printf("resethand_hits: %d\n", (int)hits);
    show("after_resethand_delivery", SIGUSR2);
}

static void delivery(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = h_info;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    MUST(sigaction(SIGUSR1, &sa, NULL));
    hits = 0;
    CHECK("raise_siginfo", raise(SIGUSR1));
    printf("siginfo: hits=%d signo_ok=%d code_is_tkill=%d\n", (int)hits, seen_signo == SIGUSR1, seen_code == SI_TKILL);
    CHECK("kill_siginfo", kill(getpid(), SIGUSR1));
    printf("siginfo_kill: hits=%d code_is_user=%d\n", (int)hits, seen_code == SI_USER);
    union sigval v = {.sival_int = 42};
    CHECK("sigqueue", sigqueue(getpid(), SIGUSR1, v));
    printf("siginfo_queue: hits=%d code_is_queue=%d\n", (int)hits, seen_code == SI_QUEUE);

    /* sa_mask defers SIGUSR2 raised inside the SIGUSR1 handler. */
    MUST(install(SIGUSR2, h_usr2, 0));
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = h_usr1_raises_usr2;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR2);
    MUST(sigaction(SIGUSR1, &sa, NULL));
    order_pos = 0;
    CHECK("raise_masked", raise(SIGUSR1));
    printf("mask_order: %d %d %d\n", order[0], order[1], order[2]);
    sa.sa_mask = (sigset_t){0};
    sigemptyset(&sa.sa_mask);
    MUST(sigaction(SIGUSR1, &sa, NULL));
    order_pos = 0;
    CHECK("raise_unmasked", raise(SIGUSR1));
    printf("unmasked_order: %d %d %d\n", order[0], order[1], order[2]);

    /* The signal itself is blocked in its handler unless SA_NODEFER. */
    MUST(install(SIGUSR1, h_nested, 0));
    depth = max_depth = entries = 0;
    CHECK("raise_deferred", raise(SIGUSR1));
    printf("deferred: entries=%d max_depth=%d\n", (int)entries, (int)max_depth);
    MUST(install(SIGUSR1, h_nested, SA_NODEFER));
    depth = max_depth = entries = 0;
    CHECK("raise_nodefer", raise(SIGUSR1));
    printf("nodefer: entries=%d max_depth=%d\n", (int)entries, (int)max_depth);

    /* errno survives a handler that does not touch it. */
    MUST(install(SIGUSR1, h_count, 0));
    errno = EDOM;
    raise(SIGUSR1);
    printf("errno_after_handler: %s\n", errname(errno));

    /* Leaving a handler with siglongjmp. */
    MUST(install(SIGUSR1, h_jump, 0));
    int got = sigsetjmp(jump, 1);
    if (got == 0) {
        raise(SIGUSR1);
        printf("siglongjmp: not taken\n");
    } else {
        printf("siglongjmp: from %d\n", got);
    }
    sigset_t cur;
    sigprocmask(SIG_BLOCK, NULL, &cur);
    FACT("mask_restored_after_siglongjmp", !sigismember(&cur, SIGUSR1));
    MUST(install(SIGUSR1, SIG_DFL, 0));
    MUST(install(SIGUSR2, SIG_DFL, 0));
}

/* Signal waits, outside any coroutine: the real calls' results and errno. */
static void waits(void)
{
    sigset_t usr1, none, old;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigemptyset(&none);
    MUST(install(SIGUSR1, h_count, 0));
    MUST(sigprocmask(SIG_BLOCK, &usr1, &old));
    struct timespec brief = {0, 10 * 1000 * 1000}, bad = {0, 1000 * 1000 * 1000};
    siginfo_t si;
    CHECK("sigtimedwait_nothing", sigtimedwait(&usr1, &si, &brief));
    CHECK("sigtimedwait_bad_timeout", sigtimedwait(&usr1, &si, &bad));
    hits = 0;
    raise(SIGUSR1);
    memset(&si, 0, sizeof si);
    CHECK("sigtimedwait_pending", sigtimedwait(&usr1, &si, &brief));
    printf("sigtimedwait_info: signo_ok=%d\n", si.si_signo == SIGUSR1);
    raise(SIGUSR1);
    CHECK("sigwaitinfo_pending", sigwaitinfo(&usr1, NULL));
    raise(SIGUSR1);
    int sig = 0;
    CHECK_RC("sigwait_pending", sigwait(&usr1, &sig));
    printf("sigwait_sig: %d consumed_unhandled=%d\n", sig, hits == 0);
    raise(SIGUSR1);
    CHECK("sigsuspend_pending", sigsuspend(&none));
    printf("sigsuspend_hits: %d\n", (int)hits);
    raise(SIGUSR1);
    CHECK("sigpause_pending", sigpause(SIGUSR1));
    printf("sigpause_hits: %d\n", (int)hits);
    arm_alarm(20, 0, -1);
    CHECK("pause_alarm", pause());
    printf("pause_alarms: %d\n", (int)alarms);
    disarm_alarm();
    sigset_t cur;
    MUST(sigprocmask(SIG_SETMASK, &old, &cur));
    FACT("mask_kept_after_waits", sigismember(&cur, SIGUSR1));
    MUST(install(SIGUSR1, SIG_DFL, 0));
}

int main(void)
{
    probe_start();
    dispositions();
    signal_functions();
    delivery();
    waits();
    printf("done\n");
    return 0;
}
