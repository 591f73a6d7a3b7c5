/* System calls made behind the hooks: glibc's internal ones (stdio on a
 * socket), `syscall()`, and inline `syscall` instructions. Natively they
 * block their thread while another thread supplies the data; under green
 * threads Syscall User Dispatch traps them and parks the coroutine, so the
 * other thread runs (without it, the first scenario hangs on one worker).
 * Each scenario prints deterministic lines: threads synchronise through
 * pipes, never by timing alone. Usage: green_dispatch SCENARIO. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MUST(x)                                                                \
	do {                                                                   \
		if (!(x)) {                                                    \
			fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__,    \
				__LINE__, #x, strerror(errno));                \
			exit(2);                                               \
		}                                                              \
	} while (0)

/* A system call no libc function makes: only dispatch can catch it. */
static long inline_syscall3(long nr, long a, long b, long c)
{
	long r;
	__asm__ volatile("syscall"
			 : "=a"(r)
			 : "a"(nr), "D"(a), "S"(b), "d"(c)
			 : "rcx", "r11", "memory");
	return r;
}

static void msleep(int ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Set by the helper thread once it has run while the main thread waited. */
static volatile int helper_ran;

struct delayed {
	int fd;
	int ms;
	const char *text;
};

static void *write_later(void *arg)
{
	struct delayed *d = arg;
	msleep(d->ms);
	helper_ran = 1;
	MUST(write(d->fd, d->text, strlen(d->text)) == (ssize_t)strlen(d->text));
	return NULL;
}

/* The first report: fgets on an fdopen'ed socket, the line written
 * by another thread 300 ms later. */
static void fgets_socket(void)
{
	int sv[2];
	MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	FILE *f = fdopen(sv[0], "r+");
	MUST(f);
	struct delayed d = {sv[1], 300, "hello over a socket\n"};
	pthread_t t;
	MUST(pthread_create(&t, NULL, write_later, &d) == 0);
	char line[64];
	MUST(fgets(line, sizeof line, f));
	printf("fgets: %s", line);
	printf("writer ran first: %s\n", helper_ran ? "yes" : "no");
	/* fputs and fflush write the socket through glibc's __write. */
	MUST(fputs("reply\n", f) >= 0 && fflush(f) == 0);
	char back[16] = {0};
	MUST(read(sv[1], back, sizeof back - 1) == 6);
	printf("peer got: %s", back);
	pthread_join(t, NULL);
	fclose(f);
	close(sv[1]);
}

/* `syscall(SYS_read)` and an inline `syscall` on a pipe filled later. */
static void raw_reads(void)
{
	int p[2];
	MUST(pipe(p) == 0);
	pthread_t t;
	struct delayed d = {p[1], 100, "via syscall()"};
	MUST(pthread_create(&t, NULL, write_later, &d) == 0);
	char buf[32] = {0};
	long n = syscall(SYS_read, p[0], buf, sizeof buf - 1);
	printf("syscall(SYS_read) = %ld \"%s\" writer ran: %s\n", n, buf,
	       helper_ran ? "yes" : "no");
	pthread_join(t, NULL);

	helper_ran = 0;
	struct delayed e = {p[1], 100, "inline"};
	MUST(pthread_create(&t, NULL, write_later, &e) == 0);
	memset(buf, 0, sizeof buf);
	n = inline_syscall3(SYS_read, p[0], (long)buf, sizeof buf - 1);
	printf("inline read = %ld \"%s\" writer ran: %s\n", n, buf,
	       helper_ran ? "yes" : "no");
	pthread_join(t, NULL);
	/* errors come back as the kernel's -errno, errno untouched */
	errno = 1234;
	n = inline_syscall3(SYS_read, 999, (long)buf, 1);
	printf("inline read on a bad fd = %ld errno %d\n", n, errno);
	n = syscall(SYS_close, 999);
	printf("syscall(SYS_close, 999) = %ld %s\n", n, strerror(errno));
	close(p[0]);
	close(p[1]);
}

/* Two threads parked inside trapped calls at once, resumed in the order
 * main chooses: each echoes what it read to its own reply pipe. */
struct echo {
	int in, out;
};

static void *echo_inline(void *arg)
{
	struct echo *e = arg;
	char c;
	long n = inline_syscall3(SYS_read, e->in, (long)&c, 1);
	if (n == 1)
		inline_syscall3(SYS_write, e->out, (long)&c, 1);
	return NULL;
}

static void two_parked(void)
{
	int a_in[2], a_out[2], b_in[2], b_out[2];
	MUST(pipe(a_in) == 0 && pipe(a_out) == 0 && pipe(b_in) == 0 &&
	     pipe(b_out) == 0);
	struct echo a = {a_in[0], a_out[1]}, b = {b_in[0], b_out[1]};
	pthread_t ta, tb;
	MUST(pthread_create(&ta, NULL, echo_inline, &a) == 0);
	MUST(pthread_create(&tb, NULL, echo_inline, &b) == 0);
	msleep(50);
	char c;
	MUST(write(b_in[1], "B", 1) == 1);
	MUST(read(b_out[0], &c, 1) == 1);
	printf("first back: %c\n", c);
	MUST(write(a_in[1], "A", 1) == 1);
	MUST(read(a_out[0], &c, 1) == 1);
	printf("second back: %c\n", c);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
}

/* A thread that blocks every signal still has its trapped calls handled
 * (a trap with SIGSYS blocked would kill the process). */
static void *masked_reader(void *arg)
{
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	int fd = *(int *)arg;
	char buf[8] = {0};
	long n = inline_syscall3(SYS_read, fd, (long)buf, sizeof buf - 1);
	printf("masked thread read %ld \"%s\"\n", n, buf);
	return NULL;
}

static void all_signals_blocked(void)
{
	int p[2];
	MUST(pipe(p) == 0);
	pthread_t t;
	MUST(pthread_create(&t, NULL, masked_reader, &p[0]) == 0);
	msleep(50);
	MUST(write(p[1], "late", 4) == 4);
	pthread_join(t, NULL);
}

/* A handler that blocks every signal (SIGSYS too) and makes inline system
 * calls, interrupting code that makes none. */
static volatile sig_atomic_t handled;
static int handler_pipe[2];

static void on_alarm(int sig)
{
	(void)sig;
	char msg[] = "handler";
	long pid = inline_syscall3(SYS_getpid, 0, 0, 0);
	if (pid == getpid())
		inline_syscall3(SYS_write, handler_pipe[1], (long)msg, 7);
	handled = 1;
}

static void handler_syscalls(void)
{
	MUST(pipe(handler_pipe) == 0);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_alarm;
	sigfillset(&sa.sa_mask);
	MUST(sigaction(SIGALRM, &sa, NULL) == 0);
	struct itimerval it = {{0, 0}, {0, 20000}};
	MUST(setitimer(ITIMER_REAL, &it, NULL) == 0);
	/* Pure computation until the handler ran (bounded: the alarm comes). */
	volatile unsigned long spins = 0;
	while (!handled)
		spins++;
	char buf[16] = {0};
	MUST(read(handler_pipe[0], buf, sizeof buf - 1) == 7);
	printf("handler made its calls: %s\n", buf);
	struct sigaction back;
	MUST(sigaction(SIGALRM, NULL, &back) == 0);
	printf("sigaction shows the program's handler: %s\n",
	       back.sa_handler == on_alarm ? "yes" : "no");
}

/* A fault handler installed the usual way returns through glibc's restorer,
 * whose rt_sigreturn is trapped and made in place. */
static char *fault_page;

static void on_segv(int sig, siginfo_t *info, void *ctx)
{
	(void)sig;
	(void)ctx;
	if ((char *)info->si_addr == fault_page)
		mprotect(fault_page, 4096, PROT_READ | PROT_WRITE);
	else
		_exit(3);
}

static void fault_returns(void)
{
	fault_page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	MUST(fault_page != MAP_FAILED);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_segv;
	sa.sa_flags = SA_SIGINFO;
	MUST(sigaction(SIGSEGV, &sa, NULL) == 0);
	*(volatile char *)fault_page = 42;
	printf("after the fault: %d\n", *(volatile char *)fault_page);
	signal(SIGSEGV, SIG_DFL);
}

/* popen (glibc's posix_spawn: clone3 on a new stack, trapped and made in
 * place), its output read by stdio; a raw fork and an inline vfork. */
static void processes(void)
{
	FILE *p = popen("echo from popen", "r");
	MUST(p);
	char line[64];
	MUST(fgets(line, sizeof line, p));
	printf("popen: %s", line);
	printf("pclose: %d\n", WEXITSTATUS(pclose(p)));

	long pid = syscall(SYS_fork);
	if (pid == 0)
		_exit(5);
	int status;
	MUST(waitpid(pid, &status, 0) == pid);
	printf("syscall(SYS_fork) child status %d\n", WEXITSTATUS(status));

	pid = inline_syscall3(SYS_vfork, 0, 0, 0);
	if (pid == 0)
		inline_syscall3(SYS_exit_group, 7, 0, 0);
	MUST(waitpid(pid, &status, 0) == pid);
	printf("inline vfork child status %d\n", WEXITSTATUS(status));
}

/* A thread that stays native (PATCHALL_NATIVE_THREADS=stays_native) has no
 * scheduler, so no dispatch: its inline read blocks its own OS thread, as
 * natively, while main's green thread goes on and writes. */
static void *stays_native_reader(void *arg)
{
	int fd = *(int *)arg;
	char buf[16] = {0};
	long n = inline_syscall3(SYS_read, fd, (long)buf, sizeof buf - 1);
	printf("native thread read %ld \"%s\"\n", n, buf);
	return NULL;
}

static void native_thread(void)
{
	int p[2];
	MUST(pipe(p) == 0);
	pthread_t t;
	MUST(pthread_create(&t, NULL, stays_native_reader, &p[0]) == 0);
	msleep(100);
	MUST(write(p[1], "from main", 9) == 9);
	pthread_join(t, NULL);
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		void (*run)(void);
	} all[] = {
		{"fgets_socket", fgets_socket},
		{"raw_reads", raw_reads},
		{"two_parked", two_parked},
		{"all_signals_blocked", all_signals_blocked},
		{"handler_syscalls", handler_syscalls},
		{"fault_returns", fault_returns},
		{"processes", processes},
		{"native_thread", native_thread},
	};
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
		if (argc < 2 || strcmp(argv[1], all[i].name) == 0)
			all[i].run();
	return 0;
}
