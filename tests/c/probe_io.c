/* read/write/readv/writev on pipes: data, EOF, EBADF, EPIPE, EAGAIN, EINTR. */
#define _GNU_SOURCE
#include "probe.h"

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/uio.h>

static void data_and_eof(void)
{
    int p[2];
    char buf[16];
    CHECK("pipe", pipe(p));
    CHECK("write", write(p[1], "hello", opaque(5)));
    memset(buf, 0, sizeof buf);
    CHECK("read", read(p[0], buf, opaque(sizeof buf)));
    printf("read_data: %s\n", buf);

    struct iovec out[2] = {{"ab", 2}, {"cde", 3}};
    CHECK("writev", writev(p[1], out, 2));
    char a[3] = {0}, b[8] = {0};
    struct iovec in[2] = {{a, 2}, {b, 7}};
    CHECK("readv", readv(p[0], in, 2));
    printf("readv_data: %s|%s\n", a, b);

    int n = 0;
    CHECK("write_3", write(p[1], "xyz", 3));
    CHECK("ioctl_fionread", ioctl(p[0], FIONREAD, &n));
    printf("fionread_bytes: %d\n", n);
    CHECK("read_drain", read(p[0], buf, opaque(sizeof buf)));

    CHECK("close_writer", close(p[1]));
    CHECK("read_eof", read(p[0], buf, opaque(sizeof buf)));
    CHECK("readv_eof", readv(p[0], in, 2));
    CHECK("close_reader", close(p[0]));
}

struct drain {
    int fd;
    long total;
};

/* Reads slowly until EOF, so that a large blocking write must wait for room. */
static void *drain_slowly(void *arg)
{
    struct drain *d = arg;
    char buf[8192];
    long n;
    usleep(20000);
    while ((n = read(d->fd, buf, opaque(sizeof buf))) > 0) {
        d->total += n;
        if (d->total < 65536)
            usleep(1000);
    }
    return NULL;
}

static void large_write(void)
{
    int p[2];
    MUST(pipe(p));
    static char big[1 << 20];
    memset(big, 'L', sizeof big);
    struct drain d = {p[0], 0};
    pthread_t t;
    pthread_create(&t, NULL, drain_slowly, &d);
    CHECK("write_large_slow_reader", write(p[1], big, sizeof big));
    struct iovec v[3] = {{big, 1000}, {big, 300000}, {big, 200000}};
    CHECK("writev_large_slow_reader", writev(p[1], v, 3));
    close(p[1]);
    pthread_join(t, NULL);
    printf("large_write_reader_total: %ld\n", d.total);
    close(p[0]);
}

static void errors(void)
{
    int p[2];
    char buf[16];
    MUST(pipe(p));
    CHECK("read_write_end", read(p[1], buf, opaque(sizeof buf)));
    CHECK("write_read_end", write(p[0], "x", 1));
    CHECK("read_neg_fd", read(-1, buf, opaque(sizeof buf)));
    CHECK("write_neg_fd", write(-1, "x", 1));
    CHECK("readv_bad_count", readv(p[0], NULL, opaque_int(-1)));
    CHECK("writev_bad_count", writev(p[1], NULL, opaque_int(-1)));
    static struct iovec many[IOV_MAX + 1];
    for (int i = 0; i <= IOV_MAX; i++) {
        many[i].iov_base = buf;
        many[i].iov_len = 1;
    }
    CHECK("writev_too_many_iovecs", writev(p[1], many, IOV_MAX + 1));
    CHECK("readv_too_many_iovecs", readv(p[0], many, IOV_MAX + 1));
    CHECK("read_zero_len", read(p[0], buf, opaque(0)));
    CHECK("write_zero_len", write(p[1], buf, 0));
    CHECK("close_reader", close(p[0]));
    CHECK("write_no_reader", write(p[1], "x", 1));
    struct iovec v = {"x", 1};
    CHECK("writev_no_reader", writev(p[1], &v, 1));
    CHECK("close_writer", close(p[1]));
    CHECK("read_closed_fd", read(p[0], buf, opaque(sizeof buf)));
    CHECK("write_closed_fd", write(p[1], "x", 1));
}

static void nonblocking(void)
{
    int p[2];
    char buf[4096];
    MUST(pipe(p));
    int fl = fcntl(p[0], F_GETFL);
    CHECK("fcntl_setfl_nonblock", fcntl(p[0], F_SETFL, fl | O_NONBLOCK));
    FACT("getfl_shows_nonblock", fcntl(p[0], F_GETFL) & O_NONBLOCK);
    CHECK("read_o_nonblock_empty", read(p[0], buf, opaque(sizeof buf)));
    struct iovec v = {buf, sizeof buf};
    CHECK("readv_o_nonblock_empty", readv(p[0], &v, 1));
    CHECK("fcntl_setfl_blocking", fcntl(p[0], F_SETFL, fl));
    FACT("getfl_shows_nonblock_after_clear", fcntl(p[0], F_GETFL) & O_NONBLOCK);

    int on = 1;
    CHECK("ioctl_fionbio_on", ioctl(p[0], FIONBIO, &on));
    FACT("getfl_after_fionbio", fcntl(p[0], F_GETFL) & O_NONBLOCK);
    CHECK("read_fionbio_empty", read(p[0], buf, opaque(sizeof buf)));
    on = 0;
    CHECK("ioctl_fionbio_off", ioctl(p[0], FIONBIO, &on));
    FACT("getfl_after_fionbio_off", fcntl(p[0], F_GETFL) & O_NONBLOCK);

    /* Fill a non-blocking pipe: partial writes, then EAGAIN. */
    MUST(fcntl(p[1], F_SETFL, O_NONBLOCK));
    memset(buf, 'z', sizeof buf);
    long total = 0, r;
    int e = 0;
    for (int i = 0; i < 1024; i++) {
        errno = 0;
        r = write(p[1], buf, sizeof buf);
        if (r < 0) {
            e = errno;
            break;
        }
        total += r;
    }
    FACT("nonblock_pipe_filled", total > 0);
    printf("write_full_pipe: errno=%s\n", errname(e));
    close(p[0]);
    close(p[1]);

    CHECK("pipe2_nonblock", pipe2(p, O_NONBLOCK | O_CLOEXEC));
    FACT("pipe2_getfl_nonblock", fcntl(p[0], F_GETFL) & O_NONBLOCK);
    FACT("pipe2_cloexec", fcntl(p[0], F_GETFD) & FD_CLOEXEC);
    CHECK("read_pipe2_nonblock_empty", read(p[0], buf, opaque(16)));
    close(p[0]);
    close(p[1]);
}

static void interrupted(void)
{
    int p[2];
    char buf[16];
    double start;
    MUST(pipe(p));

    arm_alarm(50, 0, -1);
    start = now_ms();
    CHECK("read_eintr_no_restart", read(p[0], buf, opaque(sizeof buf)));
    printf("read_eintr_alarms: %d\n", (int)alarms);
    ELAPSED_WITHIN("read_eintr_elapsed_ok", start, 40, 5000);

    /* With SA_RESTART the read resumes and gets the handler's byte. */
    arm_alarm(50, 1, p[1]);
    memset(buf, 0, sizeof buf);
    CHECK("read_sa_restart", read(p[0], buf, opaque(sizeof buf)));
    printf("read_sa_restart_data: %s alarms=%d\n", buf, (int)alarms);

    arm_alarm(50, 1, p[1]);
    char one[4] = {0};
    struct iovec v = {one, 3};
    CHECK("readv_sa_restart", readv(p[0], &v, 1));
    printf("readv_sa_restart_data: %s\n", one);

    /* A blocking write into a full pipe, interrupted before any byte moved. */
    MUST(fcntl(p[1], F_SETFL, O_NONBLOCK));
    char big[4096];
    memset(big, 'q', sizeof big);
    for (int i = 0; i < 1024 && write(p[1], big, sizeof big) > 0; i++) {
    }
    MUST(fcntl(p[1], F_SETFL, 0));
    arm_alarm(50, 0, -1);
    CHECK("write_full_eintr", write(p[1], big, 1));
    close(p[0]);
    close(p[1]);
    disarm_alarm();
}

/* Fortify: read more than the buffer holds; __read_chk must abort. */
static void overflow(void)
{
    int p[2];
    char small[4];
    MUST(pipe(p));
    MUST(write(p[1], "0123456789", 10));
    CHECK("read_overflow", read(p[0], small, opaque(8)));
}

int main(int argc, char **argv)
{
    probe_start();
    if (overflow_requested(argc, argv)) {
        overflow();
        return 0;
    }
    data_and_eof();
    large_write();
    errors();
    nonblocking();
    interrupted();
    printf("done\n");
    return 0;
}
