/* A vfork child that closes fds the parent waits on must not touch the
 * parent's registrations: the child borrows the parent's memory, so hooks
 * running in it would act on the parent's scheduler. A reader thread waits
 * on a socket while main vforks a child that closes both ends and exits;
 * the reader must then get both messages main sends, not EBADF. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int sv[2];

static void *reader(void *arg)
{
	(void)arg;
	for (int i = 1; i <= 2; i++) {
		char buf[16] = {0};
		ssize_t n = read(sv[0], buf, 5);
		if (n < 0)
			printf("read %d: -1 %s\n", i, strerror(errno));
		else
			printf("read %d: %zd %s\n", i, n, buf);
	}
	return NULL;
}

int main(void)
{
	pthread_t th;
	int status;
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		return 1;
	pthread_create(&th, NULL, reader, NULL);
	usleep(50 * 1000); /* the reader is now waiting in read */
	pid_t pid = vfork();
	if (pid == 0) {
		close(sv[0]);
		close(sv[1]);
		_exit(7);
	}
	pid_t got = waitpid(pid, &status, 0);
	printf("child: %s, exited %d\n", got == pid ? "reaped" : "lost",
	       WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	usleep(20 * 1000);
	write(sv[1], "hello", 5);
	usleep(20 * 1000);
	write(sv[1], "world", 5);
	pthread_join(th, NULL);
	return 0;
}
