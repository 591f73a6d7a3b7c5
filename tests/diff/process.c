/* Processes from threads: fork, exec, system, popen, posix_spawn, waits. */
#include "sync_kit.h"

#include <spawn.h>
#include <sys/syscall.h>

extern char **environ;

static struct gate g1, g2;

static void *fork_in_thread(void *arg)
{
    (void)arg;
    pid_t pid = fork();
    if (pid == 0) {
        say("child: hello");
        _exit(7);
    }
    int st;
    CALL("t: waitpid matches", waitpid(pid, &st, 0) == pid);
    say("t: child %s", status_of(st));
    return NULL;
}

static void fork_from_thread(void)
{
    join(spawn(fork_in_thread, NULL));
}

static void *blocked_on_gate(void *arg)
{
    (void)arg;
    gate_open(&g1);
    gate_wait(&g2);
    say("t: released");
    return NULL;
}

/* fork while other threads are blocked: the child has only the forking thread. */
static void fork_with_blocked_threads(void)
{
    gate_init(&g1);
    gate_init(&g2);
    pthread_t a = spawn(blocked_on_gate, NULL);
    pthread_t b = spawn(blocked_on_gate, NULL);
    gate_wait(&g1);
    gate_wait(&g1);
    pid_t pid = fork();
    MUST(pid >= 0);
    if (pid == 0) {
        say("child: only me");
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    say("child %s", status_of(st));
    gate_open(&g2);
    gate_open(&g2);
    join(a);
    join(b);
}

static void *child_thread(void *arg)
{
    (void)arg;
    msleep(20);
    say("child's thread runs");
    return (void *)3L;
}

/* A child forked from a thread starts and joins threads of its own. */
static void child_creates_threads(void)
{
    gate_init(&g1);
    gate_init(&g2);
    pthread_t a = spawn(blocked_on_gate, NULL);
    gate_wait(&g1);
    pid_t pid = fork();
    MUST(pid >= 0);
    if (pid == 0) {
        pthread_t t = spawn(child_thread, NULL);
        say("child: joined %ld", (long)join(t));
        exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    say("child %s", status_of(st));
    gate_open(&g2);
    join(a);
}

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;

static void child_uses_mutex(void)
{
    pthread_mutex_lock(&m);
    pid_t pid = fork();
    MUST(pid >= 0);
    if (pid == 0) {
        PCALL("child: unlock inherited", pthread_mutex_unlock(&m));
        PCALL("child: lock", pthread_mutex_lock(&m));
        _exit(0);
    }
    pthread_mutex_unlock(&m);
    int st;
    waitpid(pid, &st, 0);
    say("child %s", status_of(st));
}

static void *fork_exec_echo(void *arg)
{
    (void)arg;
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/echo", "echo", "exec'd from a thread's child", (char *)NULL);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    say("t: child %s", status_of(st));
    return NULL;
}

static void fork_exec_in_thread(void)
{
    join(spawn(fork_exec_echo, NULL));
}

static void *exec_directly(void *arg)
{
    (void)arg;
    msleep(50);
    execl("/bin/sh", "sh", "-c", "echo replaced by exec; exit 4", (char *)NULL);
    say("exec failed");
    return NULL;
}

/* A thread execs while main waits in join: the whole process becomes sh. */
static void exec_from_thread(void)
{
    say("main: before exec");
    join(spawn(exec_directly, NULL));
    say("not reached");
}

static void *run_system(void *arg)
{
    int st = system((const char *)arg);
    say("t: system %s", status_of(st));
    return NULL;
}

static void system_from_threads(void)
{
    join(spawn(run_system, "echo from system one"));
    join(spawn(run_system, "echo from system two; exit 3"));
    join(spawn(run_system, "kill -TERM $$"));
}

static void *sys_sleep(void *arg)
{
    (void)arg;
    int st = system("sleep 0.3");
    say("t: system %s", status_of(st));
    return NULL;
}

static void *ticks(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++) {
        msleep(40);
        say("ticker %d", i);
    }
    return NULL;
}

/* Another thread keeps running while one waits in system(). */
static void system_others_run(void)
{
    pthread_t a = spawn(sys_sleep, NULL);
    pthread_t b = spawn(ticks, NULL);
    join(b);
    join(a);
}

static void *run_popen(void *arg)
{
    (void)arg;
    FILE *f = popen("echo line1; sleep 0.1; echo line2", "r");
    MUST(f != NULL);
    char buf[64];
    while (fgets(buf, sizeof buf, f)) {
        buf[strcspn(buf, "\n")] = 0;
        say("t: read %s", buf);
    }
    say("t: pclose %s", status_of(pclose(f)));
    return NULL;
}

static void popen_read_in_thread(void)
{
    join(spawn(run_popen, NULL));
}

static void *run_popen_write(void *arg)
{
    (void)arg;
    fflush(stdout);
    FILE *f = popen("tr a-z A-Z", "w");
    MUST(f != NULL);
    fputs("shouted\n", f);
    say("t: pclose %s", status_of(pclose(f)));
    return NULL;
}

static void popen_write_in_thread(void)
{
    join(spawn(run_popen_write, NULL));
}

static void *run_spawn(void *arg)
{
    (void)arg;
    pid_t pid;
    char *argv[] = {"sh", "-c", "echo spawned; exit 5", NULL};
    int r = posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ);
    int st;
    waitpid(pid, &st, 0);
    say("t: posix_spawn = %s child %s", ename(r), status_of(st));
    char *bad[] = {"nope", NULL};
    int e = posix_spawnp(&pid, "patchall-no-such-program", NULL, NULL, bad, environ);
    if (e == 0) {
        waitpid(pid, &st, 0);
        say("t: spawnp missing: child %s", status_of(st));
    } else {
        say("t: spawnp missing: %s", ename(e));
    }
    return NULL;
}

static void posix_spawn_in_thread(void)
{
    join(spawn(run_spawn, NULL));
}

static void waitpid_wnohang(void)
{
    pid_t pid = fork();
    MUST(pid >= 0);
    if (pid == 0) {
        msleep(150);
        _exit(1);
    }
    int st;
    CALL("waitpid WNOHANG running", waitpid(pid, &st, WNOHANG));
    msleep(300);
    say("waitpid WNOHANG done matches %s", waitpid(pid, &st, WNOHANG) == pid ? "yes" : "no");
    say("child %s", status_of(st));
    CALL("waitpid no children", waitpid(-1, &st, WNOHANG));
    CALL("wait no children", wait(&st));
}

static void waitid_forms(void)
{
    pid_t pid = fork();
    MUST(pid >= 0);
    if (pid == 0) {
        msleep(100);
        _exit(6);
    }
    siginfo_t si;
    memset(&si, 0, sizeof si);
    CALL("waitid WNOHANG", waitid(P_PID, pid, &si, WEXITED | WNOHANG));
    say("si_pid zero %s", si.si_pid == 0 ? "yes" : "no");
    CALL("waitid WNOWAIT", waitid(P_PID, pid, &si, WEXITED | WNOWAIT));
    say("CLD_EXITED %s status %d", si.si_code == CLD_EXITED ? "yes" : "no", si.si_status);
    CALL("waitid reap", waitid(P_ALL, 0, &si, WEXITED));
    say("status %d", si.si_status);
    CALL("waitid none", waitid(P_ALL, 0, &si, WEXITED));
}

static void killed_by_signal(void)
{
    pid_t pid = fork();
    MUST(pid >= 0);
    if (pid == 0) {
        for (;;)
            pause();
    }
    msleep(50);
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    say("child %s", status_of(st));
    pid = fork();
    if (pid == 0) {
        raise(SIGSEGV);
        _exit(0);
    }
    waitpid(pid, &st, 0);
    say("child %s", status_of(st & 0x7f ? st & 0x7f : st));
}

static void vfork_exec(void)
{
    pid_t pid = vfork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", "echo from vfork; exit 2", (char *)NULL);
        _exit(127);
    }
    MUST(pid > 0);
    int st;
    waitpid(pid, &st, 0);
    say("child %s", status_of(st));
}

static long progress;

static void *count_while(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10; i++) {
        msleep(20);
        progress++;
    }
    return NULL;
}

/* A thread blocked in waitpid must not stop the others. */
static void waitpid_others_progress(void)
{
    pid_t pid = fork();
    MUST(pid >= 0);
    if (pid == 0) {
        msleep(400);
        _exit(0);
    }
    pthread_t t = spawn(count_while, NULL);
    int st;
    waitpid(pid, &st, 0);
    say("others progressed while waiting %s", progress == 10 ? "yes" : "no");
    join(t);
}

static void *wait_in_thread(void *arg)
{
    (void)arg;
    int st;
    pid_t r = wait(&st);
    say("t: wait got child %s", r > 0 ? status_of(st) : ename(errno));
    return NULL;
}

static void wait_in_thread_main_forks(void)
{
    pthread_t t = spawn(wait_in_thread, NULL);
    msleep(50);
    pid_t pid = fork();
    MUST(pid >= 0);
    if (pid == 0) {
        msleep(100);
        _exit(8);
    }
    join(t);
}

static void grandchild(void)
{
    pid_t pid = fork();
    MUST(pid >= 0);
    if (pid == 0) {
        pid_t g = fork();
        if (g == 0) {
            say("grandchild");
            _exit(1);
        }
        int st;
        waitpid(g, &st, 0);
        say("child: grandchild %s", status_of(st));
        _exit(2);
    }
    int st;
    waitpid(pid, &st, 0);
    say("child %s", status_of(st));
}

static void sigchld_ignored_autoreap(void)
{
    signal(SIGCHLD, SIG_IGN);
    pid_t pid = fork();
    MUST(pid >= 0);
    if (pid == 0)
        _exit(0);
    int st;
    CALL("waitpid", waitpid(pid, &st, 0));
}

static void *pipe_child(void *arg)
{
    (void)arg;
    int to[2], from[2];
    MUST(pipe(to) == 0 && pipe(from) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(to[1]);
        close(from[0]);
        char buf[16];
        ssize_t n = read(to[0], buf, sizeof buf);
        for (ssize_t i = 0; i < n; i++)
            buf[i] = buf[i] - 'a' + 'A';
        MUST(write(from[1], buf, n) == n);
        _exit(0);
    }
    close(to[0]);
    close(from[1]);
    MUST(write(to[1], "ping", 4) == 4);
    char buf[16] = {0};
    CALL("t: read from child", read(from[0], buf, sizeof buf - 1));
    say("t: got %s", buf);
    waitpid(pid, NULL, 0);
    return NULL;
}

static void pipe_to_child_from_thread(void)
{
    join(spawn(pipe_child, NULL));
}

static void bye(void)
{
    say("atexit in %s", getpid() == (pid_t)syscall(SYS_getpid) ? "process" : "?");
}

static void child_exit_runs_atexit(void)
{
    atexit(bye);
    pid_t pid = fork();
    MUST(pid >= 0);
    if (pid == 0)
        exit(0);
    int st;
    waitpid(pid, &st, 0);
    say("child %s", status_of(st));
    _exit(0);
}

/* A raised SIGSEGV (no fault) kills the process, as SIG_DFL says. */
static void raise_sigsegv_kills(void)
{
    say("before");
    raise(SIGSEGV);
    say("after: still alive");
}

static void *segv_in_thread(void *arg)
{
    (void)arg;
    kill(getpid(), SIGSEGV);
    msleep(200);
    say("t: still alive");
    return NULL;
}

static void kill_sigsegv_from_thread(void)
{
    join(spawn(segv_in_thread, NULL));
    say("main: still alive");
}

/* An ignored SIGSEGV that is sent (not a fault) is dropped, however often:
 * the child inherits SIG_IGN through exec. */
static void sigsegv_ignored_child(void)
{
    kill(getpid(), SIGSEGV);
    raise(SIGSEGV);
    say("child: alive after two");
}

static void sent_sigsegv_ignored(void)
{
    signal(SIGSEGV, SIG_IGN);
    pid_t pid = fork();
    MUST(pid >= 0);
    if (pid == 0) {
        execl("/proc/self/exe", "process", "sigsegv_ignored_child", (char *)NULL);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    say("child %s", status_of(st & 0x7f ? st & 0x7f : st));
}

static void abort_kills(void)
{
    say("before");
    abort();
}

static void pidfd_poll_exit(void)
{
    pid_t pid = fork();
    MUST(pid >= 0);
    if (pid == 0) {
        msleep(100);
        _exit(4);
    }
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    MUST(fd >= 0);
    struct pollfd p = {fd, POLLIN, 0};
    CALL("poll running", poll(&p, 1, 0));
    long long t0 = now_ms();
    CALL("poll", poll(&p, 1, 5000));
    say("early %s", took(t0, 50, 4000));
    int st;
    waitpid(pid, &st, 0);
    say("child %s", status_of(st));
}

DIFF_MAIN(S(fork_from_thread), S(fork_with_blocked_threads), S(child_creates_threads),
          S(child_uses_mutex), S(fork_exec_in_thread), S(exec_from_thread),
          S(system_from_threads), S(system_others_run), S(popen_read_in_thread),
          S(popen_write_in_thread), S(posix_spawn_in_thread), S(waitpid_wnohang), S(waitid_forms),
          S(killed_by_signal), S(vfork_exec), S(waitpid_others_progress),
          S(wait_in_thread_main_forks), S(grandchild), S(sigchld_ignored_autoreap),
          S(pipe_to_child_from_thread), S(child_exit_runs_atexit), S(pidfd_poll_exit), S(raise_sigsegv_kills),
          S(kill_sigsegv_from_thread), S(abort_kills), S(sigsegv_ignored_child),
          S(sent_sigsegv_ignored))
