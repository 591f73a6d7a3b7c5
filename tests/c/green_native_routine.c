/* Does a thread get an OS thread of its own? With PATCHALL_NATIVE_THREADS
 * naming its start routine it must, even with green threads on. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static int own;

void *native_worker(void *arg)
{
	(void)arg;
	own = gettid() != getpid();
	return NULL;
}

int main(void)
{
	pthread_t th;
	pthread_create(&th, NULL, native_worker, NULL);
	pthread_join(th, NULL);
	printf("own os thread: %d\n", own);
	return 0;
}
