/* fd lifetime and flags: close, dup, dup2, dup3, fcntl, ioctl, pipe, open. With
 * -D_FILE_OFFSET_BITS=64 the same calls reach fcntl64 and open64. */
#define _GNU_SOURCE
#include "probe.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>

int __close(int fd);

static void print_flags(const char *name, int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) {
        printf("%s: error %s\n", name, errname(errno));
        return;
    }
    const char *mode = (fl & O_ACCMODE) == O_RDONLY ? "rdonly" : (fl & O_ACCMODE) == O_WRONLY ? "wronly" : "rdwr";
    printf("%s: %s%s%s\n", name, mode, fl & O_NONBLOCK ? " nonblock" : "", fl & O_APPEND ? " append" : "");
}

static void print_cloexec(const char *name, int fd)
{
    int fl = fcntl(fd, F_GETFD);
    printf("%s: %s\n", name, fl < 0 ? errname(errno) : fl & FD_CLOEXEC ? "cloexec" : "inherit");
}

static void files(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/probe-fd-file", dir);
    int f = open(path, O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    FACT("open_ok", f >= 0);
    print_flags("file_flags", f);
    print_cloexec("file_fd_flags", f);
    CHECK("file_write", write(f, "0123456789", 10));
    CHECK("lseek_start", lseek(f, 0, SEEK_SET));
    char buf[16] = {0};
    CHECK("file_read", read(f, buf, opaque(4)));
    printf("file_read_data: %s\n", buf);

    int d = dup(f);
    FACT("dup_ok", d >= 0 && d != f);
    print_cloexec("dup_fd_flags", d);
    CHECK("dup_shares_offset", lseek(d, 0, SEEK_CUR));
    print_flags("dup_flags", d);
    CHECK("fcntl_setfl_nonblock_file", fcntl(f, F_SETFL, O_NONBLOCK | O_APPEND));
    print_flags("dup_sees_nonblock", d);
    CHECK("fcntl_setfl_clear", fcntl(f, F_SETFL, O_APPEND));
    CHECK("close_dup", close(d));

    int hi = fcntl(f, F_DUPFD, 100);
    FACT("f_dupfd_min", hi >= 100);
    print_cloexec("f_dupfd_fd_flags", hi);
    int hc = fcntl(f, F_DUPFD_CLOEXEC, 100);
    FACT("f_dupfd_cloexec_min", hc >= 100 && hc != hi);
    print_cloexec("f_dupfd_cloexec_fd_flags", hc);
    CHECK("f_setfd", fcntl(hi, F_SETFD, FD_CLOEXEC));
    print_cloexec("f_setfd_result", hi);
    CHECK("close_hi", close(hi));
    CHECK("close_hc", close(hc));
    CHECK("f_dupfd_negative", fcntl(f, F_DUPFD, -1));

    CHECK("dup2_same", dup2(f, f) == f);
    int target = dup(f);
    CHECK("dup2_over_open", dup2(f, target) == target);
    print_cloexec("dup2_fd_flags", target);
    CHECK("dup3_cloexec", dup3(f, target, O_CLOEXEC) == target);
    print_cloexec("dup3_fd_flags", target);
    CHECK("dup3_same", dup3(f, f, 0));
    CHECK("dup3_bad_flags", dup3(f, target, O_NONBLOCK));
    CHECK("close_target", close(target));
    CHECK("close_target_again", close(target));
    CHECK("dup2_bad_old", dup2(target, f));
    CHECK("dup2_negative_new", dup2(f, -1));
    CHECK("dup_bad", dup(target));
    CHECK("dup3_bad_old", dup3(target, f, 0));

    CHECK("ioctl_file_fionbio", ioctl(f, FIONBIO, &(int){1}));
    print_flags("file_after_fionbio", f);
    CHECK("ioctl_file_unknown", ioctl(f, 0x7ffe, 0));
    CHECK("ioctl_bad_fd", ioctl(target, FIONBIO, &(int){1}));
    CHECK("fcntl_bad_fd", fcntl(target, F_GETFL));
    CHECK("fcntl_bad_cmd", fcntl(f, 0x7ffe));
    CHECK("__close", __close(f));
    CHECK("close_neg", close(-1));
    CHECK("open_missing", open("/nonexistent/patchall-probe", O_RDONLY));
    CHECK("unlink", unlink(path));
}

static void pipes_and_sockets(void)
{
    int p[2];
    CHECK("pipe", pipe(p));
    print_flags("pipe_read_flags", p[0]);
    print_flags("pipe_write_flags", p[1]);
    print_cloexec("pipe_fd_flags", p[0]);
    CHECK("lseek_pipe", lseek(p[0], 0, SEEK_CUR));

    /* dup2 onto the read end: the old pipe end is closed and replaced. */
    int q[2];
    MUST(pipe(q));
    MUST(write(q[1], "Q", 1));
    CHECK("dup2_onto_pipe", dup2(q[0], p[0]) == p[0]);
    char c = 0;
    CHECK("read_through_dup2", read(p[0], &c, 1));
    printf("read_through_dup2_data: %c\n", c);
    CHECK("close_q0", close(q[0]));
    CHECK("write_q_still_open", write(q[1], "R", 1));
    CHECK("read_q_through_p0", read(p[0], &c, 1));
    printf("read_q_through_p0_data: %c\n", c);
    CHECK("close_q1", close(q[1]));
    CHECK("read_eof_via_dup2", read(p[0], &c, 1));
    CHECK("write_old_pipe_no_reader", write(p[1], "x", 1));
    close(p[0]);
    close(p[1]);

    CHECK("pipe2_flags", pipe2(p, O_NONBLOCK | O_CLOEXEC));
    print_flags("pipe2_read_flags", p[0]);
    print_cloexec("pipe2_fd_flags", p[1]);
    int d = dup(p[0]);
    print_flags("dup_of_nonblock_pipe", d);
    print_cloexec("dup_of_cloexec_pipe", d);
    CHECK("read_dup_nonblock", read(d, &c, 1));
    close(d);
    close(p[0]);
    close(p[1]);
    CHECK("pipe2_bad_flags", pipe2(p, 0x7fff0000));
    CHECK("pipe_bad_pointer", pipe(NULL));

    int sv[2];
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
    print_flags("socket_flags", sv[0]);
    int on = 1;
    CHECK("fionbio_socket", ioctl(sv[0], FIONBIO, &on));
    d = dup(sv[0]);
    print_flags("dup_socket_after_fionbio", d);
    CHECK("recv_dup_socket", recv(d, &c, 1, 0));
    CHECK("fcntl_clear_via_dup", fcntl(d, F_SETFL, 0));
    print_flags("socket_flags_after_clear", sv[0]);
    CHECK("send_then", send(sv[1], "S", 1, 0));
    CHECK("recv_orig_socket", recv(sv[0], &c, 1, 0));
    int nread = -1;
    MUST(send(sv[1], "TT", 2, 0));
    CHECK("ioctl_fionread_socket", ioctl(sv[0], FIONREAD, &nread));
    printf("fionread_socket_bytes: %d\n", nread);
    close(d);
    close(sv[0]);
    close(sv[1]);
}

int main(int argc, char **argv)
{
    probe_start();
    files(argc > 1 ? argv[1] : "/tmp");
    pipes_and_sockets();
    printf("done\n");
    return 0;
}
