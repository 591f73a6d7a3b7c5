/* 1,000 threads each sleep 100 ms and record that they ran. Prints how many
 * finished, the OS thread count seen from inside while all of them sleep, and
 * the elapsed time. Under green threads the count stays at a handful. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define N 1000

static int done[N];

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
	usleep(100 * 1000);
	done[(long)arg] = 1;
	return NULL;
}

static long ms_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000;
}

int main(void)
{
	static pthread_t th[N];
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < N; i++) {
		int rc = pthread_create(&th[i], NULL, sleeper, (void *)i);
		if (rc) {
			printf("pthread_create %ld: %s\n", i, strerror(rc));
			return 1;
		}
	}
	/* Every sleeper has started and sleeps until ~100 ms. */
	usleep(50 * 1000);
	int threads = os_threads();
	int finished_early = 0;
	for (int i = 0; i < N; i++)
		finished_early += done[i];
	for (int i = 0; i < N; i++)
		pthread_join(th[i], NULL);
	int finished = 0;
	for (int i = 0; i < N; i++)
		finished += done[i];
	printf("finished %d\n", finished);
	printf("finished before 50 ms %d\n", finished_early);
	printf("threads while sleeping %d\n", threads);
	printf("elapsed ms %ld\n", ms_since(&t0));
	return 0;
}
