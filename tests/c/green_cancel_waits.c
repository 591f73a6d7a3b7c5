/* Cancellation points that wait on a synchronisation object: pthread_cond_wait,
 * _timedwait, _clockwait, sem_wait, _timedwait, _clockwait. A cancelled waiter
 * runs its cleanup handlers innermost first; a condvar waiter holds the mutex
 * again when they run; join gives PTHREAD_CANCELED. With cancellation disabled
 * the wait goes on until woken. The output must be the same natively and with
 * green threads. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum how { COND, COND_TIMED, COND_CLOCK, SEM, SEM_TIMED, SEM_CLOCK };
static const char *const names[] = {
	"pthread_cond_wait", "pthread_cond_timedwait", "pthread_cond_clockwait",
	"sem_wait", "sem_timedwait", "sem_clockwait",
};

static pthread_mutex_t m;
static pthread_cond_t c = PTHREAD_COND_INITIALIZER;
static sem_t s;
static int waiting, woken, disable;

static void outer(void *arg)
{
	printf("  cleanup outer (%s)\n", (const char *)arg);
}

/* Unlocking an errorcheck mutex gives 0 only to its holder. */
static void inner(void *arg)
{
	enum how how = *(enum how *)arg;
	if (how <= COND_CLOCK) {
		int r = pthread_mutex_unlock(&m);
		printf("  cleanup inner: mutex held %d\n", r == 0);
	} else {
		printf("  cleanup inner\n");
	}
}

static struct timespec in(clockid_t clock, int seconds)
{
	struct timespec t;
	clock_gettime(clock, &t);
	t.tv_sec += seconds;
	return t;
}

static int wait_once(enum how how)
{
	struct timespec rt = in(CLOCK_REALTIME, 30), mono = in(CLOCK_MONOTONIC, 30);
	switch (how) {
	case COND: return pthread_cond_wait(&c, &m);
	case COND_TIMED: return pthread_cond_timedwait(&c, &m, &rt);
	case COND_CLOCK: return pthread_cond_clockwait(&c, &m, CLOCK_MONOTONIC, &mono);
	case SEM: return sem_wait(&s) ? errno : 0;
	case SEM_TIMED: return sem_timedwait(&s, &rt) ? errno : 0;
	case SEM_CLOCK: return sem_clockwait(&s, CLOCK_MONOTONIC, &mono) ? errno : 0;
	}
	return -1;
}

static void *waiter(void *arg)
{
	enum how how = *(enum how *)arg;
	volatile int r = 0;
	if (disable)
		pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	pthread_cleanup_push(outer, (void *)names[how]);
	pthread_cleanup_push(inner, arg);
	pthread_mutex_lock(&m);
	waiting = 1;
	if (how <= COND_CLOCK) {
		while (!woken && r == 0)
			r = wait_once(how);
		pthread_mutex_unlock(&m);
	} else {
		pthread_mutex_unlock(&m);
		r = wait_once(how);
	}
	printf("  wait returned %d\n", r);
	pthread_cleanup_pop(0);
	pthread_cleanup_pop(0);
	if (disable) {
		pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
		pthread_testcancel();
		printf("  not cancelled after enabling\n");
	}
	return NULL;
}

/* Starts a waiter, cancels it while it waits, and joins it. */
static void cancel_waiter(enum how how, int disabled)
{
	pthread_t th;
	void *ret;
	int value;
	waiting = woken = 0;
	disable = disabled;
	printf("%s%s:\n", names[how], disabled ? ", cancellation disabled" : "");
	pthread_create(&th, NULL, waiter, &how);
	for (;;) { /* a condvar waiter has released the mutex once it waits */
		pthread_mutex_lock(&m);
		int w = waiting;
		pthread_mutex_unlock(&m);
		if (w)
			break;
		usleep(1000);
	}
	usleep(20 * 1000); /* let a semaphore waiter block */
	pthread_cancel(th);
	if (disabled) {
		usleep(20 * 1000);
		pthread_mutex_lock(&m);
		woken = 1;
		pthread_cond_signal(&c);
		pthread_mutex_unlock(&m);
		if (how >= SEM)
			sem_post(&s);
	}
	pthread_join(th, &ret);
	sem_getvalue(&s, &value);
	printf("  joined: canceled %d, semaphore value %d, mutex free %d\n",
	       ret == PTHREAD_CANCELED, value, pthread_mutex_trylock(&m) == 0);
	pthread_mutex_unlock(&m);
}

/* A cancellation already pending when the wait begins acts at once. */
static void *pending_waiter(void *arg)
{
	enum how how = *(enum how *)arg;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	while (!waiting)
		usleep(1000);
	pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
	pthread_cleanup_push(outer, (void *)names[how]);
	pthread_cleanup_push(inner, arg);
	if (how <= COND_CLOCK)
		pthread_mutex_lock(&m);
	int r = wait_once(how);
	/* glibc's sem_clockwait takes a token before it tests: cancel here then. */
	pthread_testcancel();
	if (how <= COND_CLOCK)
		pthread_mutex_unlock(&m);
	printf("  wait returned %d\n", r);
	pthread_cleanup_pop(0);
	pthread_cleanup_pop(0);
	return NULL;
}

static void cancel_pending(enum how how)
{
	pthread_t th;
	void *ret;
	int value;
	waiting = 0;
	printf("%s, cancelled before it waits%s:\n", names[how],
	       how >= SEM ? " (a token is there)" : "");
	if (how >= SEM)
		sem_post(&s);
	pthread_create(&th, NULL, pending_waiter, &how);
	pthread_cancel(th);
	waiting = 1;
	pthread_join(th, &ret);
	sem_getvalue(&s, &value);
	printf("  joined: canceled %d, semaphore value %d\n", ret == PTHREAD_CANCELED, value);
	while (value-- > 0)
		sem_wait(&s);
}

int main(void)
{
	pthread_mutexattr_t a;
	setvbuf(stdout, NULL, _IOLBF, 0);
	pthread_mutexattr_init(&a);
	pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
	pthread_mutex_init(&m, &a);
	sem_init(&s, 0, 0);
	for (enum how how = COND; how <= SEM_CLOCK; how++)
		cancel_waiter(how, 0);
	for (enum how how = COND; how <= SEM_CLOCK; how++)
		cancel_waiter(how, 1);
	for (enum how how = COND; how <= SEM_CLOCK; how++)
		cancel_pending(how);
	return 0;
}
