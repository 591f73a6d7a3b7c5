/* Calls that hand the CPU or the data over between threads, and must read
 * the same with native threads and with green threads (1 or 2 workers):
 * sched_yield, pthread_spin_lock, sendfile/splice/tee, O_NONBLOCK set through
 * a dup, and opening a FIFO whose peer is another thread. With green threads
 * each scenario hangs (and the alarm kills the program) if the call blocks
 * its OS thread or never lets the other thread run. Only main prints, after
 * the threads it waits for, so the output does not depend on scheduling. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define MUST(x)                                                                \
	do {                                                                   \
		if (!(x)) {                                                    \
			fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__,    \
				__LINE__, #x, strerror(errno));                \
			exit(2);                                               \
		}                                                              \
	} while (0)

static const char *ename(int e)
{
	switch (e) {
	case 0: return "0";
	case EAGAIN: return "EAGAIN";
	case EBUSY: return "EBUSY";
	case EBADF: return "EBADF";
	case EINVAL: return "EINVAL";
	default: return strerror(e);
	}
}

/* "n" or "-1 ERRNO" for a call's result. */
static const char *res(long r, int e)
{
	static char out[4][64];
	static int next;
	char *s = out[next++ % 4];
	if (r < 0)
		snprintf(s, 64, "-1 %s", ename(e));
	else
		snprintf(s, 64, "%ld", r);
	return s;
}

#define CALL(x) ({ errno = 0; long r_ = (long)(x); res(r_, errno); })

static pthread_t spawn(void *(*f)(void *), void *arg)
{
	pthread_t t;
	MUST(pthread_create(&t, NULL, f, arg) == 0);
	return t;
}

static void *join(pthread_t t)
{
	void *r;
	MUST(pthread_join(t, &r) == 0);
	return r;
}

static void msleep(int ms) { usleep(ms * 1000); }

static const char *nb(int fd)
{
	int f = fcntl(fd, F_GETFL);
	return f < 0 ? "closed" : (f & O_NONBLOCK) ? "nonblocking" : "blocking";
}

/* ---- sched_yield ---- */

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static volatile int turn;
static long counter;

static void *take_turns(void *arg)
{
	long me = (long)arg;
	for (int i = 0; i < 200; i++) {
		for (;;) {
			pthread_mutex_lock(&m);
			if (turn == me)
				break;
			pthread_mutex_unlock(&m);
			sched_yield();
		}
		counter++;
		turn = !me;
		pthread_mutex_unlock(&m);
	}
	return NULL;
}

static void yield_alternation(void)
{
	counter = 0;
	pthread_t a = spawn(take_turns, (void *)0L);
	pthread_t b = spawn(take_turns, (void *)1L);
	join(a);
	join(b);
	printf("sched_yield turns: counter %ld, returns %s\n", counter, CALL(sched_yield()));
}

/* ---- spin locks ---- */

static pthread_spinlock_t sl;
static volatile int spin_done;

static void *polite_spinner(void *arg)
{
	(void)arg;
	while (pthread_spin_trylock(&sl) == EBUSY)
		sched_yield();
	spin_done = 1;
	pthread_spin_unlock(&sl);
	return NULL;
}

static void spin_trylock_yield_loop(void)
{
	MUST(pthread_spin_init(&sl, PTHREAD_PROCESS_PRIVATE) == 0);
	pthread_spin_lock(&sl);
	pthread_t t = spawn(polite_spinner, NULL);
	msleep(50);
	int early = spin_done;
	pthread_spin_unlock(&sl);
	join(t);
	printf("trylock+sched_yield: done before unlock %d, after %d\n", early, spin_done);
}

static void *sleepy_holder(void *arg)
{
	int *ready = arg;
	pthread_spin_lock(&sl);
	MUST(write(ready[1], "r", 1) == 1);
	msleep(50);
	spin_done = 2;
	pthread_spin_unlock(&sl);
	return NULL;
}

static void spin_holder_sleeps(void)
{
	int ready[2];
	MUST(pipe(ready) == 0);
	spin_done = 0;
	MUST(pthread_spin_init(&sl, PTHREAD_PROCESS_PRIVATE) == 0);
	pthread_t t = spawn(sleepy_holder, ready);
	char c;
	MUST(read(ready[0], &c, 1) == 1);
	int busy = pthread_spin_trylock(&sl);
	int r = pthread_spin_lock(&sl);
	printf("spin holder sleeps: trylock %s, lock %d, holder finished first %d\n",
	       ename(busy), r, spin_done == 2);
	pthread_spin_unlock(&sl);
	join(t);
	close(ready[0]);
	close(ready[1]);
}

static void *spin_count(void *arg)
{
	for (long i = 0; i < (long)arg; i++) {
		pthread_spin_lock(&sl);
		counter++;
		if (i % 500 == 0)
			sched_yield(); /* holding: the others must wait it out */
		pthread_spin_unlock(&sl);
	}
	return NULL;
}

static void spin_counter(void)
{
	counter = 0;
	MUST(pthread_spin_init(&sl, PTHREAD_PROCESS_PRIVATE) == 0);
	pthread_t t[3];
	for (int i = 0; i < 3; i++)
		t[i] = spawn(spin_count, (void *)2000L);
	for (int i = 0; i < 3; i++)
		join(t[i]);
	int l = pthread_spin_lock(&sl);
	int held = pthread_spin_trylock(&sl);
	int u = pthread_spin_unlock(&sl);
	int tl = pthread_spin_trylock(&sl);
	int u2 = pthread_spin_unlock(&sl);
	int d = pthread_spin_destroy(&sl);
	printf("spin counter: %ld; lock %d, trylock held %s, unlock %d, trylock %d, unlock %d, "
	       "destroy %d\n",
	       counter, l, ename(held), u, tl, u2, d);
}

/* ---- sendfile, splice, tee ---- */

static int SP[2];

static void *drain(void *arg)
{
	(void)arg;
	char buf[8192];
	long got = 0, sum = 0;
	ssize_t r;
	while ((r = read(SP[1], buf, sizeof buf)) > 0) {
		for (ssize_t i = 0; i < r; i++)
			sum += (unsigned char)buf[i];
		got += r;
	}
	static long out[2];
	out[0] = got;
	out[1] = sum;
	return out;
}

static int data_file(size_t size)
{
	char path[] = "/tmp/patchall-handover-XXXXXX";
	int f = mkstemp(path);
	MUST(f >= 0);
	unlink(path);
	char block[4096];
	for (size_t done = 0; done < size; done += sizeof block) {
		for (size_t i = 0; i < sizeof block; i++)
			block[i] = (char)((done + i) % 241);
		MUST(write(f, block, sizeof block) == (ssize_t)sizeof block);
	}
	return f;
}

static void sendfile_to_a_socket_a_thread_drains(void)
{
	const size_t size = 1 << 20;
	int f = data_file(size);
	long want = 0;
	for (size_t i = 0; i < size; i++)
		want += (unsigned char)(char)(i % 241);
	MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
	pthread_t t = spawn(drain, NULL);
	off_t off = 0;
	ssize_t n = sendfile(SP[0], f, &off, size);
	const char *first = res(n, errno);
	long total = n > 0 ? n : 0;
	while (n > 0 && total < (long)size) {
		n = sendfile(SP[0], f, &off, size - total);
		total += n > 0 ? n : 0;
	}
	shutdown(SP[0], SHUT_WR);
	long *got = join(t);
	printf("sendfile 1 MiB: first call %s, offset %ld, reader got %ld, same sum %d\n", first,
	       (long)off, got[0], got[1] == want);
	close(SP[0]);
	close(SP[1]);
	/* The user's O_NONBLOCK: part of it, then EAGAIN, never a wait. */
	MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, SP) == 0);
	MUST(fcntl(SP[1], F_SETFL, O_NONBLOCK) == 0);
	off = 0;
	n = sendfile(SP[1], f, &off, size);
	const char *nb_first = n > 0 && n < (long)size ? "partial" : res(n, errno);
	do
		n = sendfile(SP[1], f, &off, size);
	while (n > 0);
	printf("sendfile into a full socket: %s, then %s\n", nb_first, res(n, errno));
	close(SP[0]);
	close(SP[1]);
	close(f);
}

static void *pipe_filler(void *arg)
{
	int fd = (int)(long)arg;
	msleep(50);
	MUST(write(fd, "spliced!", 8) == 8);
	close(fd);
	return NULL;
}

static void splice_waits_for_a_writer_thread(void)
{
	int p[2];
	MUST(pipe(p) == 0);
	int f = data_file(0);
	const char *nbres = CALL(splice(p[0], NULL, f, NULL, 64, SPLICE_F_NONBLOCK));
	pthread_t t = spawn(pipe_filler, (void *)(long)p[1]);
	const char *r = CALL(splice(p[0], NULL, f, NULL, 64, 0));
	join(t);
	char buf[16] = {0};
	MUST(pread(f, buf, sizeof buf, 0) == 8);
	printf("splice: empty pipe NONBLOCK %s; waits for the writer: %s, file holds %s; at EOF "
	       "%s; read end still %s\n",
	       nbres, r, buf, CALL(splice(p[0], NULL, f, NULL, 64, 0)), nb(p[0]));
	close(p[0]);
	close(f);
}

static void *page_reader(void *arg)
{
	int fd = (int)(long)arg;
	static char got[4096];
	msleep(50);
	MUST(read(fd, got, sizeof got) == sizeof got);
	return got;
}

static void splice_into_a_full_pipe(void)
{
	int p[2];
	MUST(pipe(p) == 0);
	int size = fcntl(p[1], F_GETPIPE_SZ);
	char *fill = calloc(1, size);
	MUST(write(p[1], fill, size) == size);
	int f = data_file(4096);
	off_t off = 0;
	const char *full = CALL(splice(f, &off, p[1], NULL, 8, SPLICE_F_NONBLOCK));
	/* A thread frees a page after 50 ms: then the splice fits. */
	pthread_t t = spawn(page_reader, (void *)(long)p[0]);
	const char *r = CALL(splice(f, &off, p[1], NULL, 8, 0));
	join(t);
	printf("splice into a full pipe: NONBLOCK %s, blocking %s\n", full, r);
	free(fill);
	close(p[0]);
	close(p[1]);
	close(f);
}

static void *tee_feeder(void *arg)
{
	int fd = (int)(long)arg;
	msleep(50);
	MUST(write(fd, "teedata", 7) == 7);
	return NULL;
}

static void tee_waits_for_data(void)
{
	int a[2], b[2];
	MUST(pipe(a) == 0 && pipe(b) == 0);
	const char *empty = CALL(tee(a[0], b[1], 64, SPLICE_F_NONBLOCK));
	pthread_t t = spawn(tee_feeder, (void *)(long)a[1]);
	const char *r = CALL(tee(a[0], b[1], 64, 0));
	join(t);
	char x[8] = {0}, y[8] = {0};
	MUST(read(a[0], x, 7) == 7 && read(b[0], y, 7) == 7);
	printf("tee: empty NONBLOCK %s; waits for data: %s, %s %s\n", empty, r, x, y);
	close(a[0]);
	close(a[1]);
	close(b[0]);
	close(b[1]);
}

/* ---- O_NONBLOCK shared through dup ---- */

static void *read_one(void *arg)
{
	int fd = (int)(long)arg;
	static char c;
	return read(fd, &c, 1) == 1 ? &c : NULL;
}

static void dup_shares_nonblock(void)
{
	int p[2];
	MUST(pipe(p) == 0);
	int d = dup(p[0]);
	int d2 = fcntl(p[0], F_DUPFD_CLOEXEC, 100);
	int d3 = dup3(p[0], 200, O_CLOEXEC);
	MUST(fcntl(d, F_SETFL, O_NONBLOCK) == 0);
	char c;
	printf("dup O_NONBLOCK: original %s, F_DUPFD %s, dup3 %s; read original %s\n", nb(p[0]),
	       nb(d2), nb(d3), CALL(read(p[0], &c, 1)));
	MUST(fcntl(d3, F_SETFL, 0) == 0);
	/* Blocking again through another dup: a thread's read of the dup waits. */
	pthread_t t = spawn(read_one, (void *)(long)d);
	msleep(30);
	MUST(write(p[1], "x", 1) == 1);
	char *got = join(t);
	printf("cleared through dup3: original %s, dup %s; thread read %c\n", nb(p[0]), nb(d),
	       got ? *got : '-');
	close(d);
	close(d2);
	close(d3);
	/* A dup of an fd a thread waited on (we may have set O_NONBLOCK on it). */
	int q[2];
	MUST(pipe(q) == 0);
	t = spawn(read_one, (void *)(long)q[0]);
	msleep(30);
	MUST(write(q[1], "y", 1) == 1);
	got = join(t);
	int e = dup(q[0]);
	printf("after a thread's read: original %s, new dup %s, read dup %s\n", nb(q[0]), nb(e),
	       got ? "y" : "-");
	MUST(fcntl(e, F_SETFL, O_NONBLOCK) == 0);
	printf("set through the dup: original %s, read original %s\n", nb(q[0]),
	       CALL(read(q[0], &c, 1)));
	close(e);
	close(p[0]);
	close(p[1]);
	close(q[0]);
	close(q[1]);
}

/* ---- FIFOs ---- */

static char FIFO[96];

static void *fifo_writer(void *arg)
{
	(void)arg;
	msleep(50);
	int w = open(FIFO, O_WRONLY);
	MUST(w >= 0);
	MUST(write(w, "fifo", 4) == 4);
	close(w);
	return NULL;
}

static void fifo_open_waits_for_a_writer_thread(void)
{
	snprintf(FIFO, sizeof FIFO, "/tmp/patchall-handover-fifo-%d", (int)getpid());
	unlink(FIFO);
	MUST(mkfifo(FIFO, 0600) == 0);
	const char *nbw = CALL(open(FIFO, O_WRONLY | O_NONBLOCK));
	pthread_t t = spawn(fifo_writer, NULL);
	int r = open(FIFO, O_RDONLY);
	char buf[8] = {0};
	const char *got = CALL(read(r, buf, 4));
	join(t);
	printf("FIFO: write NONBLOCK without reader %s; open waits for the writer: %d, read %s %s, "
	       "flags %s\n",
	       nbw, r >= 0, got, buf, nb(r));
	close(r);
	int n = open("/dev/null", O_RDONLY);
	printf("/dev/null opens: %d\n", n >= 0);
	close(n);
	unlink(FIFO);
}

int main(void)
{
	alarm(20); /* a call that blocks its OS thread must not hang the test */
	setvbuf(stdout, NULL, _IOLBF, 0);
	yield_alternation();
	spin_trylock_yield_loop();
	spin_holder_sleeps();
	spin_counter();
	sendfile_to_a_socket_a_thread_drains();
	splice_waits_for_a_writer_thread();
	splice_into_a_full_pipe();
	tee_waits_for_data();
	dup_shares_nonblock();
	fifo_open_waits_for_a_writer_thread();
	printf("end\n");
	return 0;
}
