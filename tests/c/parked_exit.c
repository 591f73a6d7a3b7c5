/* Green threads parked in read, accept and a mutex when main calls exit():
 * what PATCHALL_DUMP=exit must list. Prints the fds they wait on first:
 *
 *   reader FD      (one line per reader, READERS of them)
 *   listener FD
 *   exiting
 *
 * Run under the preload with green threads; natively the threads block for
 * good and exit() ends them just the same. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define READERS 6

static pthread_mutex_t held = PTHREAD_MUTEX_INITIALIZER;

static void *reader(void *arg)
{
	char c;
	if (read((int)(long)arg, &c, 1) < 0)
		perror("read");
	return NULL;
}

static void *acceptor(void *arg)
{
	if (accept((int)(long)arg, NULL, NULL) < 0)
		perror("accept");
	return NULL;
}

static void *locker(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&held);
	pthread_mutex_unlock(&held);
	return NULL;
}

int main(void)
{
	pthread_t t;
	pthread_mutex_lock(&held);
	for (int i = 0; i < READERS; i++) {
		int p[2];
		if (pipe(p) < 0) {
			perror("pipe");
			return 1;
		}
		printf("reader %d\n", p[0]);
		pthread_create(&t, NULL, reader, (void *)(long)p[0]);
	}
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 8) < 0) {
		perror("listen");
		return 1;
	}
	printf("listener %d\n", lfd);
	pthread_create(&t, NULL, acceptor, (void *)(long)lfd);
	pthread_create(&t, NULL, locker, NULL);
	/* Lets every thread reach its wait. */
	usleep(200 * 1000);
	printf("exiting\n");
	fflush(stdout);
	exit(0);
}
