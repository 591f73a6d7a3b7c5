/* A line-based chat server in which every thread uses stdio on sockets:
 * an accept thread starts one handler thread per client; a handler reads
 * commands with fgets and answers with fprintf. 500 client threads each join,
 * send three messages, ask for the room's message count, and leave, reading
 * every answer with fgets. Each message is also appended to a room log that
 * every handler writes with fprintf (one FILE, its lock contended). */
#include "stdio_net.h"

#define CLIENTS 500
#define MSGS 3

static int port;
static atomic_int messages, clients_ok;
static FILE *room_log;

static void *handler(void *arg)
{
	char line[256], nick[256] = "?";
	FILE *in, *out;
	socket_files((int)(long)arg, &in, &out);
	while (fgets(line, sizeof line, in)) {
		line[strcspn(line, "\n")] = 0;
		if (!strncmp(line, "NICK ", 5)) {
			snprintf(nick, sizeof nick, "%s", line + 5);
			fprintf(out, "WELCOME %s\n", nick);
		} else if (!strncmp(line, "MSG ", 4)) {
			messages++;
			fprintf(room_log, "<%s> %s\n", nick, line + 4);
			fprintf(out, "SENT %s: %s\n", nick, line + 4);
		} else if (!strcmp(line, "QUIT")) {
			fprintf(out, "BYE %s\n", nick);
			break;
		} else {
			fprintf(out, "ERROR %s\n", line);
		}
		fflush(out);
	}
	fclose(in);
	fclose(out);
	return NULL;
}

static void *acceptor(void *arg)
{
	int l = (int)(long)arg;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 128 * 1024);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	for (int i = 0; i < CLIENTS; i++) {
		pthread_t h;
		int c = accept(l, NULL, NULL);
		if (c < 0 || pthread_create(&h, &attr, handler, (void *)(long)c))
			die("accept");
	}
	return NULL;
}

static int expect(FILE *in, const char *want)
{
	char line[256];
	return fgets(line, sizeof line, in) && !strcmp(line, want);
}

static void *client(void *arg)
{
	long id = (long)arg;
	char want[256];
	int ok = 1;
	FILE *in, *out;
	socket_files(connect_to(port), &in, &out);
	fprintf(out, "NICK c%ld\n", id);
	fflush(out);
	snprintf(want, sizeof want, "WELCOME c%ld\n", id);
	ok &= expect(in, want);
	for (int m = 0; m < MSGS; m++) {
		fprintf(out, "MSG hello %d from %ld\n", m, id);
		fflush(out);
		snprintf(want, sizeof want, "SENT c%ld: hello %d from %ld\n", id, m, id);
		ok &= expect(in, want);
	}
	fputs("QUIT\n", out);
	fflush(out);
	snprintf(want, sizeof want, "BYE c%ld\n", id);
	ok &= expect(in, want);
	ok &= fgetc(in) == EOF;
	clients_ok += ok;
	fclose(in);
	fclose(out);
	return NULL;
}

int main(void)
{
	pthread_t a, c[CLIENTS];
	pthread_attr_t attr;
	char line[256];
	int l = listen_any(CLIENTS, &port), lines = 0, well_formed = 0;
	room_log = tmpfile();
	if (!room_log)
		die("tmpfile");
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 128 * 1024);
	if (pthread_create(&a, NULL, acceptor, (void *)(long)l))
		die("pthread_create");
	for (long i = 0; i < CLIENTS; i++)
		if (pthread_create(&c[i], &attr, client, (void *)i))
			die("pthread_create");
	for (int i = 0; i < CLIENTS; i++)
		pthread_join(c[i], NULL);
	pthread_join(a, NULL);
	printf("clients ok: %d of %d\n", clients_ok, CLIENTS);
	printf("messages: %d\n", messages);
	rewind(room_log);
	while (fgets(line, sizeof line, room_log)) {
		long id, from;
		int m;
		lines++;
		well_formed += sscanf(line, "<c%ld> hello %d from %ld", &id, &m, &from) == 3 && id == from;
	}
	printf("room log: %d lines, %d well formed\n", lines, well_formed);
	return 0;
}
