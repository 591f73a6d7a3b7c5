/* pthread semantics that must read the same with native threads and with
 * green threads: one deterministic line per scenario (see the .expected file).
 * Threads synchronise through pipes (hooked read/write), never by timing
 * alone, so the output does not depend on scheduling; counters that native
 * threads bump at the same time are atomic. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define N_ONCE 10

struct chan {
	int fd[2];
};

static void chan_open(struct chan *c)
{
	if (pipe(c->fd)) {
		perror("pipe");
		exit(2);
	}
}

static void chan_close(struct chan *c)
{
	close(c->fd[0]);
	close(c->fd[1]);
}

static void give(struct chan *c)
{
	char b = 1;
	if (write(c->fd[1], &b, 1) != 1)
		exit(2);
}

static int take(struct chan *c)
{
	char b;
	return (int)read(c->fd[0], &b, 1);
}

static const char *err(int e)
{
	switch (e) {
	case 0: return "0";
	case EINVAL: return "EINVAL";
	case EBUSY: return "EBUSY";
	case ETIMEDOUT: return "ETIMEDOUT";
	case EDEADLK: return "EDEADLK";
	case ERANGE: return "ERANGE";
	case EAGAIN: return "EAGAIN";
	case ESRCH: return "ESRCH";
	default: return strerror(e);
	}
}

/* --- join with values ------------------------------------------------ */

static void *square(void *arg)
{
	long i = (long)arg;
	usleep(1000 * (8 - i));
	return (void *)(i * i);
}

static void join_values(void)
{
	pthread_t th[8];
	for (long i = 0; i < 8; i++)
		pthread_create(&th[i], NULL, square, (void *)i);
	printf("join values:");
	for (int i = 0; i < 8; i++) {
		void *r;
		pthread_join(th[i], &r);
		printf(" %ld", (long)r);
	}
	printf("\n");
}

/* --- self, equal, names ---------------------------------------------- */

static struct chan named_go;
static pthread_t seen_self;
static char seen_name[32];

static void *named(void *arg)
{
	(void)arg;
	seen_self = pthread_self();
	take(&named_go);
	pthread_getname_np(pthread_self(), seen_name, sizeof seen_name);
	return NULL;
}

static void self_and_names(void)
{
	pthread_t th;
	char buf[32], small[8];
	chan_open(&named_go);
	pthread_create(&th, NULL, named, NULL);
	pthread_getname_np(th, buf, sizeof buf);
	printf("default name: %s\n", buf);
	int set = pthread_setname_np(th, "worker-7");
	int too_long = pthread_setname_np(th, "0123456789abcdef");
	int short_buf = pthread_getname_np(th, small, sizeof small);
	pthread_getname_np(th, buf, sizeof buf);
	printf("names: set %s, 16 chars %s, 8-byte buffer %s, read back %s\n", err(set),
	       err(too_long), err(short_buf), buf);
	give(&named_go);
	pthread_join(th, NULL);
	printf("self/equal: own handle %d, main differs %d, name inside %s\n",
	       pthread_equal(th, seen_self), !pthread_equal(pthread_self(), th), seen_name);
	printf("join self: %s\n", err(pthread_join(pthread_self(), NULL)));
	chan_close(&named_go);
}

/* --- keys -------------------------------------------------------------- */

static pthread_key_t key, rearm_key;
static int dtor_sum, rearm_calls, own_values;
static int vals[4] = {1, 2, 3, 4};

static void add_dtor(void *v)
{
	__atomic_fetch_add(&dtor_sum, *(int *)v, __ATOMIC_SEQ_CST);
}

static void rearm_dtor(void *v)
{
	if (++rearm_calls == 1)
		pthread_setspecific(rearm_key, v);
}

static void *keyed(void *arg)
{
	int *mine = arg;
	pthread_setspecific(key, mine);
	usleep(10 * 1000); /* the other threads set theirs meanwhile */
	__atomic_fetch_add(&own_values, pthread_getspecific(key) == mine, __ATOMIC_SEQ_CST);
	if (mine == &vals[0])
		pthread_setspecific(rearm_key, mine);
	return NULL;
}

static void keys(void)
{
	pthread_t th[4];
	pthread_key_create(&key, add_dtor);
	pthread_key_create(&rearm_key, rearm_dtor);
	for (int i = 0; i < 4; i++)
		pthread_create(&th[i], NULL, keyed, &vals[i]);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	printf("keys: own values %d/4, main sees %s, destructor sum %d, re-set destructor calls %d\n",
	       own_values, pthread_getspecific(key) ? "a value" : "NULL", dtor_sum, rearm_calls);
	pthread_key_delete(key);
	pthread_key_delete(rearm_key);
}

/* --- pthread_once ------------------------------------------------------ */

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int inits, initialised, saw_init;

static void slow_init(void)
{
	usleep(50 * 1000);
	inits++;
	initialised = 1;
}

static void *oncer(void *arg)
{
	(void)arg;
	pthread_once(&once, slow_init);
	__atomic_fetch_add(&saw_init, initialised, __ATOMIC_SEQ_CST);
	return NULL;
}

static void once_many(void)
{
	pthread_t th[N_ONCE];
	for (int i = 0; i < N_ONCE; i++)
		pthread_create(&th[i], NULL, oncer, NULL);
	for (int i = 0; i < N_ONCE; i++)
		pthread_join(th[i], NULL);
	printf("once: init ran %d, threads that saw it %d/%d\n", inits, saw_init, N_ONCE);
}

/* A thread cancelled inside an init routine leaves the once not done. */
static pthread_once_t once2 = PTHREAD_ONCE_INIT;
static struct chan in_init;
static int init2_calls, init2_done;

static void init2(void)
{
	if (++init2_calls == 1) {
		give(&in_init);
		sleep(100);
	}
	init2_done = 1;
}

static void *once_then_cancelled(void *arg)
{
	(void)arg;
	pthread_once(&once2, init2);
	return NULL;
}

static void once_cancelled(void)
{
	pthread_t th;
	void *r;
	chan_open(&in_init);
	pthread_create(&th, NULL, once_then_cancelled, NULL);
	take(&in_init);
	pthread_cancel(th);
	pthread_join(th, &r);
	pthread_once(&once2, init2);
	printf("once after cancel: first canceled %d, init calls %d, done %d\n", r == PTHREAD_CANCELED,
	       init2_calls, init2_done);
	chan_close(&in_init);
}

/* --- pthread_exit and cleanup handlers --------------------------------- */

static char order[8];
static int norder;

static void note(void *arg)
{
	order[norder++] = (char)(long)arg;
}

static void leave(void)
{
	pthread_exit((void *)42);
}

static void *exiter(void *arg)
{
	(void)arg;
	pthread_cleanup_push(note, (void *)'1');
	pthread_cleanup_push(note, (void *)'2');
	leave();
	pthread_cleanup_pop(0);
	pthread_cleanup_pop(0);
	return NULL;
}

static void *popper(void *arg)
{
	(void)arg;
	pthread_cleanup_push(note, (void *)'p');
	pthread_cleanup_pop(1);
	pthread_cleanup_push(note, (void *)'x');
	pthread_cleanup_pop(0);
	return (void *)7;
}

static void exit_and_cleanup(void)
{
	pthread_t th;
	void *r, *r2;
	pthread_create(&th, NULL, exiter, NULL);
	pthread_join(th, &r);
	pthread_create(&th, NULL, popper, NULL);
	pthread_join(th, &r2);
	order[norder] = 0;
	printf("pthread_exit: value %ld, cleanup order %s, popped normally %ld\n", (long)r, order,
	       (long)r2);
}

/* --- cancellation -------------------------------------------------------- */

static struct chan ready, data, never;
static int cleaned, read_result;

static void mark_cleaned(void *arg)
{
	(void)arg;
	cleaned++;
}

static void *sleeps(void *arg)
{
	(void)arg;
	pthread_cleanup_push(mark_cleaned, NULL);
	give(&ready);
	sleep(100);
	pthread_cleanup_pop(0);
	return NULL;
}

static void *reads(void *arg)
{
	(void)arg;
	pthread_cleanup_push(mark_cleaned, NULL);
	give(&ready);
	take(&data);
	pthread_cleanup_pop(0);
	return NULL;
}

static void *blocks(void *arg)
{
	(void)arg;
	give(&ready);
	take(&never);
	return NULL;
}

static void *joins(void *arg)
{
	give(&ready);
	pthread_join(*(pthread_t *)arg, NULL);
	return NULL;
}

static void *disabled(void *arg)
{
	(void)arg;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	give(&ready);
	read_result = take(&data);
	pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
	pthread_testcancel();
	return NULL;
}

static void *cancel_then_wait(void *(*body)(void *), void *arg)
{
	pthread_t th;
	void *r;
	pthread_create(&th, NULL, body, arg);
	take(&ready);
	usleep(20 * 1000); /* let it block in its call */
	pthread_cancel(th);
	if (body == disabled)
		give(&data);
	pthread_join(th, &r);
	return r;
}

static void cancellation(void)
{
	pthread_t blocker;
	chan_open(&ready);
	chan_open(&data);
	chan_open(&never);
	int canceled = cancel_then_wait(sleeps, NULL) == PTHREAD_CANCELED;
	printf("cancel in sleep: canceled %d, cleanup ran %d\n", canceled, cleaned);
	canceled = cancel_then_wait(reads, NULL) == PTHREAD_CANCELED;
	printf("cancel in read: canceled %d, cleanup ran %d\n", canceled, cleaned);
	/* A thread joining one that never ends. */
	pthread_create(&blocker, NULL, blocks, NULL);
	take(&ready);
	canceled = cancel_then_wait(joins, &blocker) == PTHREAD_CANCELED;
	printf("cancel in join: canceled %d\n", canceled);
	canceled = cancel_then_wait(disabled, NULL) == PTHREAD_CANCELED;
	printf("cancel disabled: read gave %d, then testcancel canceled %d\n", read_result, canceled);
	pthread_cancel(blocker);
	pthread_join(blocker, NULL);
	chan_close(&ready);
	chan_close(&data);
	chan_close(&never);
}

/* --- detach, tryjoin, timedjoin, kill, attributes ------------------------ */

static struct chan hold, back;
static int detached_ran;

static void *held(void *arg)
{
	take(&hold);
	if (arg) {
		detached_ran = 1;
		give(&back);
	}
	return NULL;
}

static void detach_and_friends(void)
{
	pthread_t th;
	pthread_attr_t attr;
	struct timespec soon;
	chan_open(&hold);
	chan_open(&back);

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_create(&th, &attr, held, (void *)1);
	pthread_attr_destroy(&attr);
	int join_detached = pthread_join(th, NULL);
	give(&hold);
	take(&back);
	printf("detached: join %s, ran %d\n", err(join_detached), detached_ran);

	pthread_create(&th, NULL, held, NULL);
	int kill0 = pthread_kill(th, 0);
	int busy = pthread_tryjoin_np(th, NULL);
	clock_gettime(CLOCK_REALTIME, &soon);
	soon.tv_nsec += 30 * 1000 * 1000;
	if (soon.tv_nsec >= 1000000000) {
		soon.tv_sec++;
		soon.tv_nsec -= 1000000000;
	}
	int timed = pthread_timedjoin_np(th, NULL, &soon);
	int detach = pthread_detach(th);
	int join_after_detach = pthread_join(th, NULL);
	give(&hold);
	printf("running thread: kill 0 %s, tryjoin %s, timedjoin %s, detach %s, join after detach %s\n",
	       err(kill0), err(busy), err(timed), err(detach), err(join_after_detach));
	usleep(20 * 1000);
	chan_close(&hold);
	chan_close(&back);
}

static int stack_ok, stack_big_enough, attr_joinable;

static void *look_at_stack(void *arg)
{
	pthread_attr_t attr;
	void *addr;
	size_t size;
	int state;
	char here;
	(void)arg;
	if (pthread_getattr_np(pthread_self(), &attr))
		return NULL;
	pthread_attr_getstack(&attr, &addr, &size);
	pthread_attr_getdetachstate(&attr, &state);
	stack_ok = (char *)addr <= &here && &here < (char *)addr + size;
	stack_big_enough = size >= (1 << 20);
	attr_joinable = state == PTHREAD_CREATE_JOINABLE;
	pthread_attr_destroy(&attr);
	return NULL;
}

static void attributes(void)
{
	pthread_t th;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 1 << 20);
	pthread_create(&th, &attr, look_at_stack, NULL);
	pthread_join(th, NULL);
	printf("getattr_np: local inside stack %d, size >= 1 MiB %d, joinable %d\n", stack_ok,
	       stack_big_enough, attr_joinable);
	pthread_attr_setstacksize(&attr, (size_t)1 << 47);
	int huge = pthread_create(&th, &attr, look_at_stack, NULL);
	printf("128 TiB stack: %s\n", err(huge));
	pthread_attr_destroy(&attr);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	join_values();
	self_and_names();
	keys();
	once_many();
	once_cancelled();
	exit_and_cleanup();
	cancellation();
	detach_and_friends();
	attributes();
	printf("end\n");
	return 0;
}
