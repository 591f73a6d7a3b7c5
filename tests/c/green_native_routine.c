/* Does a thread get an OS thread of its own? With PATCHALL_NATIVE_THREADS
 * naming its start routine it must, even with green threads on; and always
 * when its start routine is bind9's libisc trampoline (named as libisc's). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static int own, isc_own;

void *native_worker(void *arg)
{
	(void)arg;
	own = gettid() != getpid();
	return NULL;
}

void *isc__trampoline_run(void *arg)
{
	(void)arg;
	isc_own = gettid() != getpid();
	return NULL;
}

int main(void)
{
	pthread_t th;
	pthread_create(&th, NULL, native_worker, NULL);
	pthread_join(th, NULL);
	printf("own os thread: %d\n", own);
	pthread_create(&th, NULL, isc__trampoline_run, NULL);
	pthread_join(th, NULL);
	printf("libisc trampoline, own os thread: %d\n", isc_own);
	return 0;
}
