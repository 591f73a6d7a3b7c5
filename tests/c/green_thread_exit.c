/* A thread calls exit(): the process ends with that status, stdio buffers are
 * flushed and atexit handlers run (one of them calls write(2) directly). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void at_exit(void)
{
	const char *msg = "atexit handler wrote\n";
	usleep(1000);
	if (write(1, msg, strlen(msg)) < 0)
		_exit(9);
}

static void *quitter(void *arg)
{
	(void)arg;
	usleep(10 * 1000);
	printf("buffered line from the thread\n");
	exit(3);
}

int main(void)
{
	pthread_t th;
	atexit(at_exit);
	printf("buffered line from main\n");
	pthread_create(&th, NULL, quitter, NULL);
	pthread_join(th, NULL);
	printf("not reached\n");
	return 0;
}
