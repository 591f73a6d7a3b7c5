/* Regular files, /dev/null, stdin as /dev/null, pread/pwrite, readv/writev,
 * sendfile, splice, tee, FIFOs, from threads. */
#include "diff.h"
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/uio.h>

static char PATH[96];

static int tmpfile_fd(const char *tag)
{
    snprintf(PATH, sizeof PATH, "/tmp/patchall-diff-%s-%d", tag, (int)getpid());
    int f = open(PATH, O_CREAT | O_RDWR | O_TRUNC, 0600);
    MUST(f >= 0);
    return f;
}

static void read_write_seek(void)
{
    int f = tmpfile_fd("rw");
    unlink(PATH);
    CALL("write", write(f, "hello world", 11));
    CALL("lseek cur", lseek(f, 0, SEEK_CUR));
    CALL("lseek 6", lseek(f, 6, SEEK_SET));
    char buf[16] = {0};
    CALL("read", read(f, buf, sizeof buf));
    say("got %s", buf);
    CALL("read at end", read(f, buf, sizeof buf));
    struct stat st;
    MUST(fstat(f, &st) == 0);
    say("size %ld", (long)st.st_size);
    CALL("ftruncate 5", ftruncate(f, 5));
    MUST(fstat(f, &st) == 0);
    say("size %ld", (long)st.st_size);
    CALL("fsync", fsync(f));
    CALL("fdatasync", fdatasync(f));
}

static void pread_pwrite_keep_position(void)
{
    int f = tmpfile_fd("pp");
    unlink(PATH);
    CALL("write", write(f, "0123456789", 10));
    CALL("pwrite at 2", pwrite(f, "ab", 2, 2));
    char buf[8] = {0};
    CALL("pread 4 at 1", pread(f, buf, 4, 1));
    say("got %s", buf);
    CALL("position", lseek(f, 0, SEEK_CUR));
    CALL("pread past end", pread(f, buf, 4, 100));
    CALL("pread negative offset", pread(f, buf, 4, -1));
    struct iovec v[2] = {{buf, 2}, {buf + 2, 2}};
    memset(buf, 0, sizeof buf);
    CALL("preadv at 6", preadv(f, v, 2, 6));
    say("got %s", buf);
    CALL("pwritev at 20", pwritev(f, v, 2, 20));
    CALL("size", lseek(f, 0, SEEK_END));
}

static void readv_writev_file(void)
{
    int f = tmpfile_fd("iov");
    unlink(PATH);
    struct iovec w[3] = {{"one ", 4}, {"two ", 4}, {"three", 5}};
    CALL("writev", writev(f, w, 3));
    lseek(f, 0, SEEK_SET);
    char a[5] = {0}, b[9] = {0};
    struct iovec r[2] = {{a, 4}, {b, 8}};
    CALL("readv", readv(f, r, 2));
    say("got [%s][%s]", a, b);
    CALL("readv at EOF", readv(f, r, 2));
}

static void dev_null_and_zero(void)
{
    int n = open("/dev/null", O_RDWR);
    char buf[4096];
    CALL("read /dev/null", read(n, buf, sizeof buf));
    CALL("write /dev/null", write(n, buf, sizeof buf));
    int z = open("/dev/zero", O_RDONLY);
    memset(buf, 1, sizeof buf);
    CALL("read /dev/zero", read(z, buf, sizeof buf));
    long nz = 0;
    for (size_t i = 0; i < sizeof buf; i++)
        nz += buf[i] != 0;
    say("nonzero bytes %ld", nz);
}

static void *read_stdin(void *arg)
{
    (void)arg;
    char buf[16];
    ssize_t r = read(0, buf, sizeof buf);
    return (void *)r;
}

static void stdin_dev_null_in_threads(void)
{
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        t[i] = spawn(read_stdin, NULL);
    for (int i = 0; i < 3; i++)
        say("thread %d: read stdin = %ld", i, (long)join(t[i]));
    char c;
    CALL("main: read stdin", read(0, &c, 1));
    CALL("main: fgetc", fgetc(stdin));
    say("feof %d", feof(stdin) != 0);
}

static int AF;

static void *append_lines(void *arg)
{
    long id = (long)arg;
    char line[16];
    int n = snprintf(line, sizeof line, "t%ld........\n", id);
    for (int i = 0; i < 200; i++)
        MUST(write(AF, line, n) == n);
    return NULL;
}

static void append_from_threads(void)
{
    AF = tmpfile_fd("app");
    unlink(PATH);
    MUST(fcntl(AF, F_SETFL, O_APPEND) == 0);
    pthread_t t[4];
    for (long i = 0; i < 4; i++)
        t[i] = spawn(append_lines, (void *)i);
    for (int i = 0; i < 4; i++)
        join(t[i]);
    struct stat st;
    MUST(fstat(AF, &st) == 0);
    say("size %ld (want %d)", (long)st.st_size, 4 * 200 * 12);
    char *buf = malloc(st.st_size);
    MUST(pread(AF, buf, st.st_size, 0) == st.st_size);
    long torn = 0;
    for (long i = 0; i < st.st_size; i += 12)
        torn += buf[i] != 't' || buf[i + 11] != '\n';
    say("torn lines %ld", torn);
}

static void *file_worker(void *arg)
{
    long id = (long)arg;
    char path[96];
    snprintf(path, sizeof path, "/tmp/patchall-diff-w%ld-%d", id, (int)getpid());
    int f = open(path, O_CREAT | O_RDWR | O_TRUNC, 0600);
    if (f < 0)
        return (void *)-1L;
    static char data[4][65536];
    memset(data[id], 'a' + id, sizeof data[id]);
    long ok = write(f, data[id], sizeof data[id]) == (ssize_t)sizeof data[id];
    char back[65536];
    ok &= pread(f, back, sizeof back, 0) == (ssize_t)sizeof back;
    ok &= memcmp(back, data[id], sizeof back) == 0;
    close(f);
    unlink(path);
    return (void *)ok;
}

static void threads_each_own_file(void)
{
    pthread_t t[4];
    for (long i = 0; i < 4; i++)
        t[i] = spawn(file_worker, (void *)i);
    for (int i = 0; i < 4; i++)
        say("worker %d ok %ld", i, (long)join(t[i]));
}

static int SP[2];

static void *drain(void *arg)
{
    (void)arg;
    char buf[8192];
    long got = 0, sum = 0;
    ssize_t r;
    while ((r = read(SP[1], buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < r; i++)
            sum += (unsigned char)buf[i];
        got += r;
    }
    say("reader: got %ld sum %ld", got, sum);
    return NULL;
}

static void sendfile_to_socket_reader_thread(void)
{
    alarm(2);
    int f = tmpfile_fd("sf");
    unlink(PATH);
    static char data[1 << 20];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (char)(i % 241);
    MUST(write(f, data, sizeof data) == (ssize_t)sizeof data);
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
    pthread_t t = spawn(drain, NULL);
    off_t off = 0;
    long total = 0;
    while (total < (long)sizeof data) {
        ssize_t n = sendfile(SP[0], f, &off, sizeof data - total);
        if (n <= 0) {
            say("sendfile failed %s", ename(errno));
            break;
        }
        total += n;
    }
    say("main: sent %ld, offset %ld", total, (long)off);
    shutdown(SP[0], SHUT_WR);
    join(t);
}

static void *pipe_filler(void *arg)
{
    int fd = (int)(long)arg;
    msleep(50);
    say("filler: writing");
    MUST(write(fd, "spliced!", 8) == 8);
    close(fd);
    return NULL;
}

static void splice_pipe_to_file(void)
{
    alarm(2);
    int p[2];
    MUST(pipe(p) == 0);
    int f = tmpfile_fd("sp");
    unlink(PATH);
    pthread_t t = spawn(pipe_filler, (void *)(long)p[1]);
    CALL("main: splice (waits for data)", splice(p[0], NULL, f, NULL, 64, 0));
    join(t);
    char buf[16] = {0};
    MUST(pread(f, buf, sizeof buf, 0) == 8);
    say("file holds %s", buf);
    CALL("splice at EOF", splice(p[0], NULL, f, NULL, 64, 0));
}

static void tee_between_pipes(void)
{
    int a[2], b[2];
    MUST(pipe(a) == 0 && pipe(b) == 0);
    MUST(write(a[1], "teedata", 7) == 7);
    CALL("tee", tee(a[0], b[1], 64, 0));
    char x[8] = {0}, y[8] = {0};
    MUST(read(a[0], x, 7) == 7 && read(b[0], y, 7) == 7);
    say("%s %s", x, y);
    CALL("tee empty NONBLOCK", tee(a[0], b[1], 64, SPLICE_F_NONBLOCK));
}

static void open_errors(void)
{
    CALL("open missing", open("/nonexistent/patchall", O_RDONLY));
    CALL("open dir for writing", open("/tmp", O_WRONLY));
    int d = open("/tmp", O_RDONLY | O_DIRECTORY);
    char c;
    CALL("read a directory", read(d, &c, 1));
    int f = tmpfile_fd("ex");
    CALL("O_EXCL on existing", open(PATH, O_CREAT | O_EXCL | O_RDWR, 0600));
    unlink(PATH);
    close(f);
    CALL("read closed", read(f, &c, 1));
    CALL("write read-only", ({
             int r = open("/dev/null", O_RDONLY);
             write(r, "x", 1);
         }));
}

static void *fifo_writer(void *arg)
{
    (void)arg;
    msleep(50);
    say("writer: opening the FIFO");
    int w = open(PATH, O_WRONLY);
    MUST(w >= 0);
    MUST(write(w, "fifo", 4) == 4);
    close(w);
    return NULL;
}

static void fifo_open_waits_for_writer(void)
{
    alarm(2);
    snprintf(PATH, sizeof PATH, "/tmp/patchall-diff-fifo-%d", (int)getpid());
    unlink(PATH);
    MUST(mkfifo(PATH, 0600) == 0);
    pthread_t t = spawn(fifo_writer, NULL);
    int r = open(PATH, O_RDONLY);
    say("main: opened %d", r >= 0);
    char buf[8] = {0};
    CALL("main: read", read(r, buf, 4));
    say("main: got %s", buf);
    join(t);
    unlink(PATH);
}

static void fifo_nonblocking_open(void)
{
    snprintf(PATH, sizeof PATH, "/tmp/patchall-diff-fifo2-%d", (int)getpid());
    unlink(PATH);
    MUST(mkfifo(PATH, 0600) == 0);
    CALL("open write NONBLOCK without reader", open(PATH, O_WRONLY | O_NONBLOCK));
    int r = open(PATH, O_RDONLY | O_NONBLOCK);
    say("read NONBLOCK open %d, flags %s", r >= 0, flags_of(r));
    char c;
    CALL("read empty FIFO without writer", read(r, &c, 1));
    unlink(PATH);
}

static void big_file_write_read(void)
{
    int f = tmpfile_fd("big");
    unlink(PATH);
    static char data[2 << 20];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (char)(i * 7);
    CALL("write 2 MiB", write(f, data, sizeof data));
    lseek(f, 0, SEEK_SET);
    static char back[2 << 20];
    CALL("read 2 MiB", read(f, back, sizeof back));
    say("same %d", memcmp(data, back, sizeof data) == 0);
}

DIFF_MAIN(S(read_write_seek), S(pread_pwrite_keep_position), S(readv_writev_file),
          S(dev_null_and_zero), S(stdin_dev_null_in_threads), S(append_from_threads),
          S(threads_each_own_file), S(sendfile_to_socket_reader_thread),
          S(splice_pipe_to_file), S(tee_between_pipes), S(open_errors),
          S(fifo_open_waits_for_writer), S(fifo_nonblocking_open), S(big_file_write_read))
