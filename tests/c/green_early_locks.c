/* Locks that glibc's own implementation used before green threads were turned
 * on: other libraries' constructors run before `__libc_start_main`, where the
 * preload decides (bind9's libisc initialises OpenSSL there, whose rwlocks
 * `dig`'s main then write-locks). A function in .preinit_array runs at the same
 * point and uses each kind of object; main then uses them from threads.
 * Deterministic output, the same natively and with green threads. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 2000

static pthread_rwlock_t rw_written = PTHREAD_RWLOCK_INITIALIZER;
static pthread_rwlock_t rw_read = PTHREAD_RWLOCK_INITIALIZER;
static pthread_rwlock_t rw_writer_first;
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t recursive;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static pthread_barrier_t barrier_of_one, barrier_of_two;
static sem_t sem;

static long counter;
static int flag;
static int serials;

/* Meets the caller at `barrier_of_two` `arg` times, counting serial returns. */
static void *partner(void *arg)
{
	for (long i = 0; i < (long)arg; i++)
		if (pthread_barrier_wait(&barrier_of_two) == PTHREAD_BARRIER_SERIAL_THREAD)
			__atomic_fetch_add(&serials, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static const char *err(int e)
{
	switch (e) {
	case 0: return "0";
	case EBUSY: return "EBUSY";
	case ETIMEDOUT: return "ETIMEDOUT";
	case EDEADLK: return "EDEADLK";
	case PTHREAD_BARRIER_SERIAL_THREAD: return "SERIAL";
	default: return strerror(e);
	}
}

static void early(int argc, char **argv, char **envp)
{
	(void)argc, (void)argv, (void)envp;
	pthread_rwlockattr_t a;
	pthread_mutexattr_t ma;
	struct timespec ts;

	/* glibc leaves a lock last write-locked in its write phase. */
	pthread_rwlock_wrlock(&rw_written);
	pthread_rwlock_unlock(&rw_written);
	pthread_rwlock_rdlock(&rw_read);
	pthread_rwlock_unlock(&rw_read);
	pthread_rwlockattr_init(&a);
	pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&rw_writer_first, &a);
	pthread_rwlock_wrlock(&rw_writer_first);
	pthread_rwlock_unlock(&rw_writer_first);
	pthread_rwlock_rdlock(&rw_writer_first);
	pthread_rwlock_unlock(&rw_writer_first);
	pthread_rwlock_wrlock(&rw_writer_first);
	pthread_rwlock_unlock(&rw_writer_first);

	pthread_mutex_lock(&mutex);
	pthread_mutex_unlock(&mutex);
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&recursive, &ma);
	pthread_mutex_lock(&recursive);
	pthread_mutex_lock(&recursive);
	pthread_mutex_unlock(&recursive);
	pthread_mutex_unlock(&recursive);

	/* A condvar that was waited on (and timed out) and signalled. */
	pthread_mutex_lock(&mutex);
	clock_gettime(CLOCK_REALTIME, &ts);
	pthread_cond_timedwait(&cond, &mutex, &ts);
	pthread_mutex_unlock(&mutex);
	pthread_cond_signal(&cond);
	pthread_cond_broadcast(&cond);

	pthread_barrier_init(&barrier_of_one, NULL, 1);
	pthread_barrier_wait(&barrier_of_one);
	/* A round of two: glibc leaves its arrivals and departures at 2. */
	pthread_t t;
	pthread_barrier_init(&barrier_of_two, NULL, 2);
	pthread_create(&t, NULL, partner, (void *)1L);
	partner((void *)1L);
	pthread_join(t, NULL);

	sem_init(&sem, 0, 1);
	sem_wait(&sem);
	sem_post(&sem);
	sem_wait(&sem);
}

__attribute__((section(".preinit_array"), used)) static void (*const early_entry)(int, char **, char **) = early;

/* Takes `rw` for writing and reading, alternately, ROUNDS times: the others
 * doing the same make each kind wait for the other. */
static void *hammer(void *arg)
{
	pthread_rwlock_t *rw = arg;
	for (int i = 0; i < ROUNDS; i++) {
		if (pthread_rwlock_wrlock(rw))
			abort();
		long seen = counter;
		if (i % 64 == 0)
			usleep(10);
		counter = seen + 1;
		pthread_rwlock_unlock(rw);
		if (pthread_rwlock_rdlock(rw))
			abort();
		if (i % 64 == 32)
			usleep(10);
		pthread_rwlock_unlock(rw);
	}
	return NULL;
}

static void hammered(const char *name, pthread_rwlock_t *rw)
{
	pthread_t t[3];
	counter = 0;
	for (int i = 0; i < 3; i++)
		pthread_create(&t[i], NULL, hammer, rw);
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	printf("%s: 3 threads wrote %ld times\n", name, counter);
}

static void rwlock_after_early_use(const char *name, pthread_rwlock_t *rw)
{
	printf("%s: wrlock %s", name, err(pthread_rwlock_wrlock(rw)));
	printf(", tryrdlock %s", err(pthread_rwlock_tryrdlock(rw)));
	printf(", unlock %s", err(pthread_rwlock_unlock(rw)));
	printf(", rdlock twice %s", err(pthread_rwlock_rdlock(rw)));
	printf(" %s", err(pthread_rwlock_tryrdlock(rw)));
	printf(", trywrlock %s", err(pthread_rwlock_trywrlock(rw)));
	printf(", unlock twice %s", err(pthread_rwlock_unlock(rw)));
	printf(" %s", err(pthread_rwlock_unlock(rw)));
	printf(", trywrlock %s", err(pthread_rwlock_trywrlock(rw)));
	printf(", unlock %s\n", err(pthread_rwlock_unlock(rw)));
	hammered(name, rw);
}

static void *count_under_mutex(void *arg)
{
	pthread_mutex_t *m = arg;
	for (int i = 0; i < ROUNDS; i++) {
		pthread_mutex_lock(m);
		long seen = counter;
		if (i % 64 == 0)
			usleep(10);
		counter = seen + 1;
		pthread_mutex_unlock(m);
	}
	return NULL;
}

static void mutex_after_early_use(const char *name, pthread_mutex_t *m)
{
	pthread_t t[2];
	counter = 0;
	for (int i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, count_under_mutex, m);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	printf("%s: 2 threads counted to %ld\n", name, counter);
}

static void *signaller(void *arg)
{
	(void)arg;
	usleep(1000);
	pthread_mutex_lock(&mutex);
	flag = 1;
	pthread_cond_signal(&cond);
	pthread_mutex_unlock(&mutex);
	usleep(1000);
	sem_post(&sem);
	return NULL;
}

int main(void)
{
	pthread_t t;
	int r, v;

	setvbuf(stdout, NULL, _IOLBF, 0);
	rwlock_after_early_use("rwlock written early", &rw_written);
	rwlock_after_early_use("rwlock read early", &rw_read);
	rwlock_after_early_use("writer-first rwlock written early", &rw_writer_first);
	mutex_after_early_use("mutex", &mutex);
	mutex_after_early_use("recursive mutex", &recursive);

	sem_getvalue(&sem, &v);
	printf("semaphore value %d\n", v);
	pthread_create(&t, NULL, signaller, NULL);
	pthread_mutex_lock(&mutex);
	while (!flag)
		if ((r = pthread_cond_wait(&cond, &mutex)))
			break;
	pthread_mutex_unlock(&mutex);
	printf("cond wait %s, flag %d\n", err(r), flag);
	printf("sem_wait %d\n", sem_wait(&sem));
	pthread_join(t, NULL);
	printf("barrier of one %s\n", err(pthread_barrier_wait(&barrier_of_one)));
	serials = 0;
	pthread_create(&t, NULL, partner, (void *)3L);
	partner((void *)3L);
	pthread_join(t, NULL);
	printf("barrier of two: 3 rounds, %d serial\n", serials);
	printf("barrier destroy %s\n", err(pthread_barrier_destroy(&barrier_of_two)));
	return 0;
}
