/* Waiting: poll/ppoll/select/pselect/epoll timeouts and readiness, and the sleep
 * family: nanosleep/clock_nanosleep errors, interruption and `rem`. */
#define _GNU_SOURCE
#include "probe.h"

#include <limits.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/select.h>

static void polls(void)
{
    int p[2];
    MUST(pipe(p));
    struct pollfd fds[2] = {{p[0], POLLIN, 0}, {-1, POLLIN, 0}};
    double start = now_ms();
    CHECK("poll_timeout", poll(fds, opaque(2), 50));
    ELAPSED_WITHIN("poll_timeout_elapsed_ok", start, 45, 5000);
    CHECK("poll_zero_timeout", poll(fds, opaque(1), 0));
    CHECK("write", write(p[1], "r", 1));
    CHECK("poll_ready", poll(fds, opaque(2), 5000));
    printf("poll_revents: %#x %#x\n", fds[0].revents, fds[1].revents);
    struct pollfd wr = {p[1], POLLOUT, 0};
    CHECK("poll_writable", poll(&wr, 1, 0));
    printf("poll_writable_revents: %#x\n", wr.revents);
    CHECK("poll_nfds_too_many", poll(opaque_ptr(fds), opaque(1u << 30), 0));
    CHECK("poll_no_fds_timeout", poll(NULL, 0, 20));

    struct timespec ts = {0, 20000000};
    CHECK("ppoll_ready", ppoll(fds, 1, &ts, NULL));
    char c;
    MUST(read(p[0], &c, 1));
    start = now_ms();
    CHECK("ppoll_timeout", ppoll(fds, 1, &ts, NULL));
    ELAPSED_WITHIN("ppoll_timeout_elapsed_ok", start, 15, 5000);
    struct timespec bad = {0, -1};
    CHECK("ppoll_bad_timeout", ppoll(fds, 1, &bad, NULL));

    arm_alarm(50, 1, -1);
    CHECK("poll_eintr_even_with_sa_restart", poll(fds, 1, 5000));
    printf("poll_eintr_alarms: %d\n", (int)alarms);
    disarm_alarm();

    /* Timeouts too large for any deadline arithmetic, cut short by a signal. */
    arm_alarm(50, 0, -1);
    CHECK("poll_int_max_eintr", poll(fds, opaque(1), INT_MAX));
    arm_alarm(50, 0, -1);
    CHECK("poll_negative_timeout_eintr", poll(fds, opaque(1), -5));
    struct timespec huge = {LONG_MAX, 999999999};
    arm_alarm(50, 0, -1);
    CHECK("ppoll_huge_eintr", ppoll(fds, 1, &huge, NULL));
    struct timespec negts = {-1, 0};
    CHECK("ppoll_negative_timeout", ppoll(fds, 1, &negts, NULL));
    disarm_alarm();

    close(p[1]);
    CHECK("poll_hup", poll(fds, 1, 5000));
    printf("poll_hup_revents: %#x\n", fds[0].revents);
    close(p[0]);
    CHECK("poll_closed_fd", poll(fds, 1, 0));
    printf("poll_closed_revents: %#x\n", fds[0].revents);
}

static void selects(void)
{
    int p[2];
    MUST(pipe(p));
    fd_set r;
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    struct timeval tv = {0, 50000};
    double start = now_ms();
    CHECK("select_timeout", select(p[0] + 1, &r, NULL, NULL, &tv));
    ELAPSED_WITHIN("select_timeout_elapsed_ok", start, 45, 5000);
    printf("select_timeout_left: %ld.%06ld set=%d\n", (long)tv.tv_sec, (long)tv.tv_usec, FD_ISSET(p[0], &r));
    MUST(write(p[1], "s", 1));
    FD_SET(p[0], &r);
    tv.tv_sec = 5;
    tv.tv_usec = 0;
    CHECK("select_ready", select(p[0] + 1, &r, NULL, NULL, &tv));
    FACT("select_ready_set", FD_ISSET(p[0], &r));
    FACT("select_ready_left_time", tv.tv_sec > 0 || tv.tv_usec > 0);
    CHECK("select_negative_nfds", select(-1, &r, NULL, NULL, &tv));
    struct timeval badtv = {0, -1};
    CHECK("select_bad_timeout", select(p[0] + 1, &r, NULL, NULL, &badtv));
    CHECK("select_no_fds", select(0, NULL, NULL, NULL, &(struct timeval){0, 20000}));

    struct timespec ts = {0, 20000000};
    FD_SET(p[0], &r);
    CHECK("pselect_ready", pselect(p[0] + 1, &r, NULL, NULL, &ts, NULL));
    char c;
    MUST(read(p[0], &c, 1));
    FD_SET(p[0], &r);
    start = now_ms();
    CHECK("pselect_timeout", pselect(p[0] + 1, &r, NULL, NULL, &ts, NULL));
    ELAPSED_WITHIN("pselect_timeout_elapsed_ok", start, 15, 5000);
    printf("pselect_timeout_unchanged: %ld.%09ld\n", (long)ts.tv_sec, ts.tv_nsec);

    struct timeval hugetv = {LONG_MAX, 999999};
    FD_SET(p[0], &r);
    arm_alarm(50, 0, -1);
    CHECK("select_huge_eintr", select(p[0] + 1, &r, NULL, NULL, &hugetv));
    FACT("select_huge_left_large", hugetv.tv_sec > 1000000);
    struct timeval tv2 = {5, 0};
    FD_SET(p[0], &r);
    arm_alarm(50, 0, -1);
    CHECK("select_eintr", select(p[0] + 1, &r, NULL, NULL, &tv2));
    FACT("select_eintr_left_updated", tv2.tv_sec >= 3 && tv2.tv_sec < 5);
    struct timeval negtv = {-1, 0};
    CHECK("select_negative_timeout", select(p[0] + 1, &r, NULL, NULL, &negtv));
    struct timespec hugets = {LONG_MAX, 999999999};
    FD_SET(p[0], &r);
    arm_alarm(50, 0, -1);
    CHECK("pselect_huge_eintr", pselect(p[0] + 1, &r, NULL, NULL, &hugets, NULL));
    disarm_alarm();

    int closed = p[0];
    close(p[0]);
    close(p[1]);
    FD_ZERO(&r);
    FD_SET(closed, &r);
    CHECK("select_closed_fd", select(closed + 1, &r, NULL, NULL, &(struct timeval){0, 0}));
}

static void epolls(void)
{
    int p[2];
    MUST(pipe(p));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    FACT("epoll_create1_ok", ep >= 0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 7};
    CHECK("epoll_ctl_add", epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev));
    struct epoll_event out[4];
    double start = now_ms();
    CHECK("epoll_wait_timeout", epoll_wait(ep, out, 4, 50));
    ELAPSED_WITHIN("epoll_wait_timeout_elapsed_ok", start, 45, 5000);
    MUST(write(p[1], "e", 1));
    CHECK("epoll_wait_ready", epoll_wait(ep, out, 4, 5000));
    printf("epoll_event: events=%#x data=%u\n", out[0].events, out[0].data.u32);
    CHECK("epoll_pwait_ready", epoll_pwait(ep, out, 4, 5000, NULL));
    CHECK("epoll_wait_zero_max", epoll_wait(ep, out, 0, 0));
    CHECK("epoll_wait_bad_fd", epoll_wait(-1, out, 4, 0));
    CHECK("epoll_wait_not_epoll", epoll_wait(p[0], out, 4, 0));

    /* An epoll fd is itself pollable. */
    struct pollfd pf = {ep, POLLIN, 0};
    CHECK("poll_on_epoll_fd", poll(&pf, 1, 0));
    char c;
    MUST(read(p[0], &c, 1));
    CHECK("poll_on_idle_epoll_fd", poll(&pf, 1, 20));

    arm_alarm(50, 1, -1);
    CHECK("epoll_wait_eintr", epoll_wait(ep, out, 4, 5000));
    arm_alarm(50, 1, -1);
    CHECK("epoll_wait_int_max_eintr", epoll_wait(ep, out, 4, INT_MAX));
    arm_alarm(50, 1, -1);
    CHECK("epoll_pwait_infinite_eintr", epoll_pwait(ep, out, 4, -1, NULL));
    disarm_alarm();
    close(ep);
    close(p[0]);
    close(p[1]);
}

static void sleeps(void)
{
    struct timespec req = {0, 10000000}, rem = {7, 7};
    double start = now_ms();
    CHECK("nanosleep", nanosleep(&req, &rem));
    ELAPSED_WITHIN("nanosleep_elapsed_ok", start, 9, 5000);
    printf("nanosleep_rem_untouched: %ld.%ld\n", (long)rem.tv_sec, rem.tv_nsec);
    req.tv_nsec = 1000000000;
    CHECK("nanosleep_nsec_too_big", nanosleep(&req, NULL));
    req.tv_sec = -1;
    req.tv_nsec = 0;
    CHECK("nanosleep_negative", nanosleep(&req, NULL));
    req.tv_sec = 0;
    req.tv_nsec = 0;
    CHECK("nanosleep_zero", nanosleep(&req, NULL));

    arm_alarm(50, 1, -1);
    req.tv_sec = 5;
    rem.tv_sec = rem.tv_nsec = 0;
    CHECK("nanosleep_eintr_even_with_sa_restart", nanosleep(&req, &rem));
    FACT("nanosleep_rem_filled", rem.tv_sec >= 3 && rem.tv_sec < 5);

    arm_alarm(50, 1, -1);
    req.tv_sec = 5;
    req.tv_nsec = 0;
    CHECK("nanosleep_rem_same_as_req", nanosleep(&req, &req));
    FACT("nanosleep_rem_same_as_req_filled", req.tv_sec >= 3 && req.tv_sec < 5);
    arm_alarm(50, 1, -1);
    req.tv_sec = LONG_MAX;
    req.tv_nsec = 999999999;
    rem.tv_sec = rem.tv_nsec = 0;
    CHECK("nanosleep_huge_eintr", nanosleep(&req, &rem));
    FACT("nanosleep_huge_rem_over_100_years", rem.tv_sec > 100L * 365 * 86400);

    req.tv_sec = 0;
    req.tv_nsec = 10000000;
    start = now_ms();
    CHECK_RC("clock_nanosleep_monotonic", clock_nanosleep(CLOCK_MONOTONIC, 0, &req, NULL));
    ELAPSED_WITHIN("clock_nanosleep_elapsed_ok", start, 9, 5000);
    CHECK_RC("clock_nanosleep_realtime", clock_nanosleep(CLOCK_REALTIME, 0, &req, NULL));
    CHECK_RC("clock_nanosleep_bad_clock", clock_nanosleep((clockid_t)12345, 0, &req, NULL));
    CHECK_RC("clock_nanosleep_thread_cputime", clock_nanosleep(CLOCK_THREAD_CPUTIME_ID, 0, &req, NULL));
    struct timespec badreq = {0, 1000000000};
    CHECK_RC("clock_nanosleep_nsec_too_big", clock_nanosleep(CLOCK_MONOTONIC, 0, &badreq, NULL));
    struct timespec abs;
    clock_gettime(CLOCK_MONOTONIC, &abs);
    abs.tv_sec -= 1;
    CHECK_RC("clock_nanosleep_abs_past", clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &abs, NULL));
    clock_gettime(CLOCK_MONOTONIC, &abs);
    abs.tv_nsec += 20000000;
    if (abs.tv_nsec >= 1000000000) {
        abs.tv_sec++;
        abs.tv_nsec -= 1000000000;
    }
    CHECK_RC("clock_nanosleep_abs_future", clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &abs, NULL));
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    FACT("clock_nanosleep_abs_reached", now.tv_sec > abs.tv_sec || (now.tv_sec == abs.tv_sec && now.tv_nsec >= abs.tv_nsec));

    arm_alarm(50, 1, -1);
    req.tv_sec = 5;
    req.tv_nsec = 0;
    rem.tv_sec = rem.tv_nsec = 0;
    CHECK_RC("clock_nanosleep_eintr", clock_nanosleep(CLOCK_MONOTONIC, 0, &req, &rem));
    FACT("clock_nanosleep_rem_filled", rem.tv_sec >= 3 && rem.tv_sec < 5);
    arm_alarm(50, 1, -1);
    clock_gettime(CLOCK_MONOTONIC, &abs);
    abs.tv_sec += 5;
    rem.tv_sec = rem.tv_nsec = 7;
    CHECK_RC("clock_nanosleep_abs_eintr", clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &abs, &rem));
    printf("clock_nanosleep_abs_rem_untouched: %ld.%ld\n", (long)rem.tv_sec, rem.tv_nsec);

    arm_alarm(50, 1, -1);
    abs.tv_sec = LONG_MAX;
    abs.tv_nsec = 0;
    CHECK_RC("clock_nanosleep_abs_huge_eintr", clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &abs, NULL));
    arm_alarm(50, 1, -1);
    req.tv_sec = LONG_MAX;
    req.tv_nsec = 0;
    rem.tv_sec = rem.tv_nsec = 0;
    CHECK_RC("clock_nanosleep_huge_eintr", clock_nanosleep(CLOCK_REALTIME, 0, &req, &rem));
    FACT("clock_nanosleep_huge_rem_over_100_years", rem.tv_sec > 100L * 365 * 86400);
    req.tv_sec = -1;
    CHECK_RC("clock_nanosleep_negative", clock_nanosleep(CLOCK_MONOTONIC, 0, &req, NULL));

    CHECK("sleep_zero", sleep(0));
    CHECK("usleep", usleep(10000));
    CHECK("usleep_zero", usleep(0));
    arm_alarm(50, 1, -1);
    unsigned left = sleep(5);
    FACT("sleep_interrupted_left", left >= 4 && left <= 5);
    arm_alarm(50, 1, -1);
    CHECK("usleep_eintr", usleep(5000000));
    arm_alarm(50, 1, -1);
    left = sleep(UINT_MAX);
    FACT("sleep_uint_max_interrupted_left", left > UINT_MAX - 10);
    arm_alarm(50, 1, -1);
    CHECK("usleep_uint_max_eintr", usleep(UINT_MAX));
    disarm_alarm();
}

/* Fortify: pass more pollfds than the array holds; __poll_chk must abort. */
static void overflow(void)
{
    struct pollfd one[1] = {{-1, POLLIN, 0}};
    CHECK("poll_overflow", poll(one, opaque(2), 0));
}

int main(int argc, char **argv)
{
    probe_start();
    if (overflow_requested(argc, argv)) {
        overflow();
        return 0;
    }
    polls();
    selects();
    epolls();
    sleeps();
    printf("done\n");
    return 0;
}
