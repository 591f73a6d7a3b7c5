/* The monkey-patch moment on an unmodified program: 1,000 pthreads that each
 * sleep one second and say so. Natively that is 1,000 OS threads; under
 * `patchall run --green-threads` the same binary runs them as coroutines on
 * one OS thread, and the whole run still takes about one second.
 *
 *   cc -O2 -pthread -o sleepy_threads examples/c/sleepy_threads.c
 *   ./sleepy_threads
 *   patchall run --green-threads -- ./sleepy_threads
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define N 1000

/* The kernel's count of this process's threads ("Threads:" in
 * /proc/self/status), -1 if unreadable. */
static int os_threads(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	int n = -1;
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "Threads: %d", &n) == 1)
			break;
	if (f)
		fclose(f);
	return n;
}

static void *sleeper(void *arg)
{
	sleep(1);
	printf("thread %ld woke\n", (long)arg);
	return NULL;
}

int main(void)
{
	static pthread_t th[N];
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < N; i++) {
		int rc = pthread_create(&th[i], NULL, sleeper, (void *)i);
		if (rc) {
			fprintf(stderr, "pthread_create %ld: %s\n", i, strerror(rc));
			return 1;
		}
	}
	/* Every thread exists now and sleeps for most of a second. */
	int threads = os_threads();
	for (int i = 0; i < N; i++)
		pthread_join(th[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double elapsed = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("%d threads slept 1 s each in %.2f s; OS threads while they slept: %d\n", N, elapsed,
	       threads);
	return 0;
}
