/* Exit paths that wait for threads (contract 13), run as one scenario per
 * process (argv[1]):
 *   handlers  main returns; an atexit handler and a destructor each stop a
 *             pool of workers (one waits on a condvar, one on a semaphore)
 *             and join them, as libuv's exit handler joins its pool;
 *   exit      a thread calls exit(5) while the pools wait: the same handlers
 *             run, in that thread, and the status is 5;
 *   alive     main returns while threads sleep and wait: the handlers still
 *             run, the sleepers never print;
 *   kill      pthread_kill on a thread that ended but is not joined.
 * The output is the same natively and with green threads on any number of
 * workers. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WORKERS 3

struct pool {
	const char *name;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	sem_t sem;
	int use_sem;
	int stop;
	int started;
	pthread_t th[WORKERS];
};

static struct pool cond_pool = { .name = "cond", .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
static struct pool sem_pool = { .name = "sem", .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

struct arg {
	struct pool *pool;
	int index;
};

static void *worker(void *p)
{
	struct arg *a = p;
	struct pool *pool = a->pool;
	if (pool->use_sem) {
		while (sem_wait(&pool->sem) != 0 && errno == EINTR)
			;
	} else {
		pthread_mutex_lock(&pool->lock);
		while (!pool->stop)
			pthread_cond_wait(&pool->cond, &pool->lock);
		pthread_mutex_unlock(&pool->lock);
	}
	/* A wait of its own once stopped: the joiner must keep driving. */
	usleep(2000);
	return (void *)(intptr_t)(100 * (pool->use_sem + 1) + a->index);
}

static void start_pool(struct pool *pool, int use_sem)
{
	static struct arg args[2][WORKERS];
	pool->use_sem = use_sem;
	if (use_sem)
		sem_init(&pool->sem, 0, 0);
	for (int i = 0; i < WORKERS; i++) {
		args[use_sem][i] = (struct arg){ pool, i };
		if (pthread_create(&pool->th[i], NULL, worker, &args[use_sem][i]) != 0) {
			printf("pthread_create failed\n");
			exit(1);
		}
	}
	pool->started = 1;
}

static void stop_pool(struct pool *pool, const char *who)
{
	if (!pool->started)
		return;
	if (pool->use_sem) {
		for (int i = 0; i < WORKERS; i++)
			sem_post(&pool->sem);
	} else {
		pthread_mutex_lock(&pool->lock);
		pool->stop = 1;
		pthread_cond_broadcast(&pool->cond);
		pthread_mutex_unlock(&pool->lock);
	}
	for (int i = 0; i < WORKERS; i++) {
		void *ret = NULL;
		int r = pthread_join(pool->th[i], &ret);
		printf("%s: %s worker %d joined %d, returned %d\n", who, pool->name, i, r,
		       (int)(intptr_t)ret);
	}
	fflush(stdout);
}

static void at_exit(void)
{
	stop_pool(&cond_pool, "atexit");
}

__attribute__((destructor)) static void destructor(void)
{
	stop_pool(&sem_pool, "destructor");
}

static void *sleeper(void *p)
{
	(void)p;
	sleep(30);
	printf("sleeper woke: not expected\n");
	return NULL;
}

static void *quitter(void *p)
{
	(void)p;
	usleep(5000);
	printf("thread calls exit(5)\n");
	exit(5);
}

static void *quick(void *p)
{
	return p;
}

static const char *err(int e)
{
	switch (e) {
	case 0: return "0";
	case ESRCH: return "ESRCH";
	case EINVAL: return "EINVAL";
	default: return strerror(e);
	}
}

static int kill_scenario(void)
{
	pthread_t t;
	if (pthread_create(&t, NULL, quick, (void *)7) != 0)
		return 1;
	/* pthread_sigqueue says ESRCH once the thread has ended (natively and
	 * green alike): wait for that, for at most 10 s. */
	union sigval v = { 0 };
	int q0 = 0;
	for (int i = 0; i < 10000 && (q0 = pthread_sigqueue(t, 0, v)) == 0; i++)
		usleep(1000);
	int k0 = pthread_kill(t, 0);
	int kusr = pthread_kill(t, SIGUSR1);
	/* glibc refuses its own signal (32, SIGCANCEL) first, but sends nothing
	 * to an ended thread, so never looks at a number out of range (65). */
	int kcancel = pthread_kill(t, 32);
	int k65 = pthread_kill(t, 65);
	printf("ended, not joined: kill 0 %s, kill SIGUSR1 %s, kill 32 %s, kill 65 %s, "
	       "sigqueue 0 %s\n",
	       err(k0), err(kusr), err(kcancel), err(k65), err(q0));
	void *ret = NULL;
	int j = pthread_join(t, &ret);
	printf("join %s, returned %d\n", err(j), (int)(intptr_t)ret);
	return 0;
}

int main(int argc, char **argv)
{
	const char *what = argc > 1 ? argv[1] : "";
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (strcmp(what, "kill") == 0)
		return kill_scenario();
	atexit(at_exit);
	start_pool(&cond_pool, 0);
	start_pool(&sem_pool, 1);
	if (strcmp(what, "handlers") == 0) {
		usleep(5000);
		printf("main returns 0\n");
		return 0;
	}
	if (strcmp(what, "exit") == 0) {
		pthread_t t;
		pthread_create(&t, NULL, quitter, NULL);
		pthread_join(t, NULL);
		printf("not reached\n");
		return 1;
	}
	if (strcmp(what, "alive") == 0) {
		pthread_t t;
		for (int i = 0; i < 4; i++)
			pthread_create(&t, NULL, sleeper, NULL);
		usleep(5000);
		printf("main returns 7 with sleepers alive\n");
		return 7;
	}
	printf("usage: green_exit_paths handlers|exit|alive|kill\n");
	return 2;
}
