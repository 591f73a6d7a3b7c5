/* The calls patchall may hand to its offload pool, outside coroutines: name
 * resolution from /etc/hosts, regular-file calls, the wait family, fork, exec
 * and posix_spawn. With -D_FILE_OFFSET_BITS=64 the file calls reach open64,
 * pread64…; with _FORTIFY_SOURCE, __pread_chk and __open_2. */
#define _GNU_SOURCE
#include "probe.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>

extern char **environ;

static const char *ipv4(const void *addr)
{
    static char text[INET_ADDRSTRLEN];
    return inet_ntop(AF_INET, addr, text, sizeof text);
}

static void print_hostent(const char *name, const struct hostent *h)
{
    if (!h) {
        printf("%s: null h_errno=%d\n", name, h_errno);
        return;
    }
    printf("%s: %s %s\n", name, h->h_name, ipv4(h->h_addr_list[0]));
}

static void names(void)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    CHECK_RC("getaddrinfo_localhost", getaddrinfo("localhost", "80", &hints, &res));
    if (res) {
        struct sockaddr_in *sin = (struct sockaddr_in *)res->ai_addr;
        printf("getaddrinfo_addr: %s port %d\n", ipv4(&sin->sin_addr), ntohs(sin->sin_port));
        freeaddrinfo(res);
    }
    hints.ai_flags = AI_NUMERICHOST;
    int rc = getaddrinfo("not-a-number", NULL, &hints, &res);
    printf("getaddrinfo_numeric_bad: %s\n", rc == EAI_NONAME ? "EAI_NONAME" : gai_strerror(rc));

    struct sockaddr_in lo = {.sin_family = AF_INET, .sin_port = htons(80)};
    inet_pton(AF_INET, "127.0.0.1", &lo.sin_addr);
    char host[256], serv[32];
    CHECK_RC("getnameinfo_numeric", getnameinfo((struct sockaddr *)&lo, sizeof lo, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV));
    printf("getnameinfo_numeric_host: %s %s\n", host, serv);
    CHECK_RC("getnameinfo_name", getnameinfo((struct sockaddr *)&lo, sizeof lo, host, sizeof host, NULL, 0, NI_NAMEREQD));
    printf("getnameinfo_name_host: %s\n", host);

    print_hostent("gethostbyname", gethostbyname("localhost"));
    print_hostent("gethostbyname2", gethostbyname2("localhost", AF_INET));
    print_hostent("gethostbyaddr", gethostbyaddr(&lo.sin_addr, 4, AF_INET));
    struct hostent ent, *result = NULL;
    char buf[2048];
    int herr = 0;
    CHECK_RC("gethostbyname_r", gethostbyname_r("localhost", &ent, buf, sizeof buf, &result, &herr));
    print_hostent("gethostbyname_r_result", result);
    CHECK_RC("gethostbyname2_r", gethostbyname2_r("localhost", AF_INET, &ent, buf, sizeof buf, &result, &herr));
    print_hostent("gethostbyname2_r_result", result);
    CHECK_RC("gethostbyaddr_r", gethostbyaddr_r(&lo.sin_addr, 4, AF_INET, &ent, buf, sizeof buf, &result, &herr));
    print_hostent("gethostbyaddr_r_result", result);
    CHECK_RC("gethostbyname_r_erange", gethostbyname_r("localhost", &ent, buf, opaque(8), &result, &herr));
}

static void files(const char *dir)
{
    char path[4096], missing[4096];
    snprintf(path, sizeof path, "%s/probe-offload-file", dir);
    snprintf(missing, sizeof missing, "%s/missing", dir);
    CHECK("open_missing", open(missing, opaque_int(O_RDONLY)));
    int f = creat(path, 0600);
    FACT("creat_ok", f >= 0);
    CHECK("write", write(f, "hello ", 6));
    struct iovec wv[2] = {{"wor", 3}, {"ld!", 3}};
    CHECK("writev", writev(f, wv, 2));
    CHECK("pwrite", pwrite(f, "HE", 2, 0));
    struct iovec pv[2] = {{"L", 1}, {"Lo", 2}};
    CHECK("pwritev", pwritev(f, pv, 2, 2));
    CHECK("fsync", fsync(f));
    CHECK("fdatasync", fdatasync(f));
    CHECK("read_wronly", read(f, path + 4000, opaque(4)));
    CHECK("close", close(f));

    int d = open(dir, O_RDONLY | O_DIRECTORY);
    f = openat(d, "probe-offload-file", opaque_int(O_RDONLY));
    FACT("openat_ok", f >= 0);
    char buf[32] = {0};
    CHECK("read", read(f, buf, opaque(5)));
    printf("read_data: %s\n", buf);
    char a[4] = {0}, b[16] = {0};
    struct iovec rv[2] = {{a, 3}, {b, 15}};
    CHECK("readv_to_eof", readv(f, rv, 2));
    printf("readv_data: %s|%s\n", a, b);
    CHECK("read_at_eof", read(f, buf, opaque(8)));
    memset(buf, 0, sizeof buf);
    CHECK("pread", pread(f, buf, opaque(4), 6));
    printf("pread_data: %s\n", buf);
    CHECK("pread_past_eof", pread(f, buf, opaque(4), 100));
    CHECK("pread_negative", pread(f, buf, opaque(4), -1));
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    CHECK("preadv", preadv(f, rv, 2, 1));
    printf("preadv_data: %s|%s\n", a, b);
    CHECK("read_dir", read(d, buf, opaque(4)));
    CHECK("fsync_bad", fsync(-1));
    int p[2];
    MUST(pipe(p));
    CHECK("pread_pipe", pread(p[0], buf, opaque(4), 0));
    CHECK("fdatasync_pipe", fdatasync(p[0]));
    close(p[0]);
    close(p[1]);
    close(f);
    close(d);
    unlink(path);
}

/* Prints how a wait went; called after it, so `status` is what it wrote. */
static void print_status(const char *name, pid_t pid, pid_t got, int status)
{
    if (got != pid) {
        printf("%s: got %s\n", name, got < 0 ? errname(errno) : "another pid");
        return;
    }
    if (WIFEXITED(status))
        printf("%s: exited %d\n", name, WEXITSTATUS(status));
    else if (WIFSTOPPED(status))
        printf("%s: stopped %d\n", name, WSTOPSIG(status));
    else
        printf("%s: signalled %d\n", name, WTERMSIG(status));
}

static void processes(void)
{
    int status = 0;
    pid_t got;
    pid_t pid = fork();
    if (pid == 0) {
        usleep(20000);
        _exit(3);
    }
    CHECK("waitpid_wnohang_running", waitpid(pid, &status, WNOHANG));
    got = waitpid(pid, &status, 0);
    print_status("waitpid_fork", pid, got, status);

    pid = fork();
    if (pid == 0) {
        char *argv[] = {"sh", "-c", "exit 4", NULL};
        execv("/bin/sh", argv);
        _exit(127);
    }
    struct rusage ru;
    got = wait4(pid, &status, 0, &ru);
    print_status("wait4_exec", pid, got, status);

    pid = vfork();
    if (pid == 0)
        _exit(5);
    got = wait(&status);
    print_status("wait_vfork", pid, got, status);

    char *argv[] = {"sh", "-c", "exit 6", NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, 2, 1);
    CHECK_RC("posix_spawn", posix_spawn(&pid, "/bin/sh", &fa, NULL, argv, environ));
    posix_spawn_file_actions_destroy(&fa);
    siginfo_t info;
    memset(&info, 0, sizeof info);
    CHECK("waitid", waitid(P_PID, pid, &info, WEXITED));
    printf("waitid_info: %s %d\n", info.si_pid == pid ? "pid" : "other", info.si_status);

    int rc = posix_spawnp(&pid, "sh", NULL, NULL, argv, environ);
    printf("posix_spawnp: rc=%s\n", errname(rc));
    got = wait3(&status, 0, NULL);
    print_status("wait3", pid, got, status);

    CHECK("waitpid_not_a_child", waitpid(1, &status, 0));
    CHECK("wait_no_children", wait(&status));
    CHECK("waitid_bad_idtype", waitid((idtype_t)77, 0, &info, WEXITED));
}

int main(int argc, char **argv)
{
    probe_start();
    if (argc < 2) {
        fprintf(stderr, "usage: probe_offload DIR\n");
        return 2;
    }
    names();
    files(argv[1]);
    processes();
    printf("done\n");
    return 0;
}
