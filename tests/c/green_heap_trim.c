/* Threads that allocate and free blocks of 100 kB: each free that leaves
 * more than the trim threshold at the top of a thread arena's heap shrinks
 * the heap, and the first such shrink in the process has glibc read
 * /proc/sys/vm/overcommit_memory (open, read, close, made inside `free`
 * with the arena's lock held). Under green threads the threads placed on a
 * second worker share that worker's arena, so those calls are trapped while
 * the lock is held: had the coroutine been suspended there (the open or the
 * read handed to the offload pool), its siblings' mallocs, the pool's
 * thread start and the scheduler's own allocations would wait for the lock
 * forever. Prints how many threads finished, and whether one of them ran
 * on another OS thread than main's (else nothing was tested). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define THREADS 8
#define ROUNDS 50
#define BLOCK 100000

static atomic_int finished, elsewhere;

static void *churn(void *arg)
{
	(void)arg;
	for (int round = 0; round < ROUNDS; round++) {
		char *a = malloc(BLOCK), *b = malloc(BLOCK);
		if (!a || !b) {
			perror("malloc");
			exit(1);
		}
		memset(a, 1, BLOCK);
		memset(b, 2, BLOCK);
		free(b);
		free(a);
	}
	if (gettid() != getpid())
		elsewhere = 1;
	finished++;
	return NULL;
}

int main(void)
{
	pthread_t t[THREADS];
	for (int i = 0; i < THREADS; i++)
		if (pthread_create(&t[i], NULL, churn, NULL)) {
			perror("pthread_create");
			return 1;
		}
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	printf("threads finished: %d of %d\n", finished, THREADS);
	printf("one ran on another OS thread than main's: %s\n", elsewhere ? "yes" : "no");
	return 0;
}
