/* Programs that close every fd they did not open (daemons, shells, bind9)
 * and then use threads, sleep, pipes, sockets: the runtime's own fds must
 * behave as closed fds and the runtime must keep working (contract 10). */
#include "diff.h"
#include <dirent.h>
#include <linux/close_range.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/syscall.h>

static int P[2];

static void *pinger(void *arg)
{
    (void)arg;
    msleep(30);
    say("thread: writing");
    MUST(write(P[1], "t", 1) == 1);
    return NULL;
}

static void *pinger_noop(void *arg)
{
    return arg;
}

/* What every scenario does after its closing: threads, sleep, a pipe wait,
 * poll, a socket pair. */
static void use_everything(void)
{
    MUST(pipe(P) == 0);
    pthread_t t = spawn(pinger, NULL);
    char c = 0;
    CALL("main: read (thread writes)", read(P[0], &c, 1));
    join(t);
    long long t0 = now_ms();
    msleep(30);
    say("slept %s", took(t0, 25, 2000));
    struct pollfd p = {P[0], POLLIN, 0};
    CALL("poll 30ms", poll(&p, 1, 30));
    t = spawn(pinger, NULL);
    CALL("main: poll -1", poll(&p, 1, -1));
    join(t);
    int c1, a1;
    tcp_pair(&c1, &a1);
    CALL("tcp send", send(c1, "x", 1, 0));
    CALL("tcp recv", recv(a1, &c, 1, 0));
}

static void close_loop_to_1024(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    int closed = 0;
    for (int fd = 3; fd < 1024; fd++)
        closed += close(fd) == 0;
    say("closed some: %s", closed >= 0 ? "ok" : "?");
    use_everything();
}

static void close_range_all(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    CALL("close_range(3, ~0U, 0)", syscall(SYS_close_range, 3, ~0U, 0));
    use_everything();
}

static void close_range_glibc(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    CALL("close_range(3, ~0U, 0)", close_range(3, ~0U, 0));
    use_everything();
}

static void closefrom_3(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    closefrom(3);
    say("closefrom(3) done");
    use_everything();
}

static void close_range_cloexec(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    CALL("close_range CLOEXEC", close_range(3, ~0U, CLOSE_RANGE_CLOEXEC));
    use_everything();
}

static void threads_then_close_loop(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    join(spawn(pinger_noop, NULL));
    say("threads started once");
    for (int fd = 3; fd < 1024; fd++)
        close(fd);
    use_everything();
}

static void threads_then_closefrom(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    MUST(pipe(P) == 0);
    join(spawn(pinger, NULL));
    say("threads started once");
    closefrom(3);
    use_everything();
}

static void threads_then_close_range(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    MUST(pipe(P) == 0);
    join(spawn(pinger, NULL));
    say("threads started once");
    CALL("close_range", close_range(3, ~0U, 0));
    use_everything();
}

static void dup2_devnull_over_all(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    MUST(pipe(P) == 0);
    join(spawn(pinger, NULL));
    int n = open("/dev/null", O_RDWR);
    MUST(n >= 0);
    int bad = 0;
    for (int fd = 3; fd < 256; fd++)
        if (fd != n && dup2(n, fd) != fd)
            bad++;
    say("dup2 /dev/null over 3..255 failed %d", bad);
    for (int fd = 3; fd < 256; fd++)
        close(fd);
    use_everything();
}

static void dup3_over_all_then_close(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    MUST(pipe(P) == 0);
    join(spawn(pinger, NULL));
    int n = open("/dev/null", O_RDWR);
    int bad = 0;
    for (int fd = 3; fd < 256; fd++)
        if (fd != n && dup3(n, fd, O_CLOEXEC) != fd)
            bad++;
    say("dup3 over 3..255 failed %d", bad);
    closefrom(3);
    use_everything();
}

static void closed_fds_look_closed(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    MUST(pipe(P) == 0);
    join(spawn(pinger, NULL));
    closefrom(3);
    int open_fds = 0;
    for (int fd = 3; fd < 1024; fd++)
        open_fds += fcntl(fd, F_GETFD) >= 0;
    say("fds open after closefrom: %d", open_fds);
    char c;
    int bad = 0;
    for (int fd = 3; fd < 64; fd++)
        bad += read(fd, &c, 0) != -1 || errno != EBADF;
    say("reads not EBADF: %d", bad);
    use_everything();
}

static void proc_self_fd_listing_then_close(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    MUST(pipe(P) == 0);
    join(spawn(pinger, NULL));
    /* As shells do: close what /proc/self/fd lists. */
    int fds[1024], n = 0;
    DIR *d = opendir("/proc/self/fd");
    MUST(d);
    struct dirent *e;
    while ((e = readdir(d)) && n < 1024) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] != '.' && fd > 2)
            fds[n++] = fd;
    }
    closedir(d);
    for (int i = 0; i < n; i++)
        close(fds[i]);
    say("closed the listed fds");
    use_everything();
}

static void epoll_after_closefrom(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    join(spawn(pinger_noop, NULL));
    closefrom(3);
    MUST(pipe(P) == 0);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    CALL("epoll_ctl", epoll_ctl(ep, EPOLL_CTL_ADD, P[0], &ev));
    pthread_t t = spawn(pinger, NULL);
    CALL("main: epoll_wait", epoll_wait(ep, &ev, 1, 5000));
    join(t);
}

static void *sleeper(void *arg)
{
    long ms = (long)arg;
    msleep(ms);
    return (void *)ms;
}

static void sleeping_threads_after_close_loop(void)
{
    alarm(2); /* a hang must not hold the suite for its 20 s limit */
    for (int fd = 3; fd < 1024; fd++)
        close(fd);
    pthread_t t[5];
    for (long i = 0; i < 5; i++)
        t[i] = spawn(sleeper, (void *)(10 + 10 * i));
    long sum = 0;
    for (int i = 0; i < 5; i++)
        sum += (long)join(t[i]);
    say("sum %ld", sum);
}

DIFF_MAIN(S(close_loop_to_1024), S(close_range_all), S(close_range_glibc), S(closefrom_3),
          S(close_range_cloexec), S(threads_then_close_loop), S(threads_then_closefrom),
          S(threads_then_close_range), S(dup2_devnull_over_all), S(dup3_over_all_then_close),
          S(closed_fds_look_closed), S(proc_self_fd_listing_then_close),
          S(epoll_after_closefrom), S(sleeping_threads_after_close_loop))
