/* main ends with pthread_exit: the process lives on until its last thread
 * ends, then exits with status 0 and runs atexit handlers. main's own key
 * destructors run when main exits, before the other threads finish. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static pthread_key_t key;

static void main_key_dtor(void *v)
{
	printf("main's key destructor: %s\n", (char *)v);
}

static void at_exit(void)
{
	printf("atexit handler\n");
}

static void *worker(void *arg)
{
	long i = (long)arg;
	usleep((i + 1) * 30 * 1000);
	printf("worker %ld done\n", i);
	return NULL;
}

int main(void)
{
	pthread_t th;
	setvbuf(stdout, NULL, _IOLBF, 0);
	atexit(at_exit);
	pthread_key_create(&key, main_key_dtor);
	pthread_setspecific(key, "main's value");
	for (long i = 0; i < 3; i++) {
		pthread_create(&th, NULL, worker, (void *)i);
		pthread_detach(th);
	}
	printf("main exits\n");
	pthread_exit(NULL);
}
