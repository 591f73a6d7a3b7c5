/* Two threads ping-pong through one mutex and one condvar, then through two
 * semaphores, ROUNDS times each; the counts must come out exact.
 *
 * Prints which implementation owned the mutex: glibc records the owner's tid
 * in __owner while it is locked, patchall's green-thread mutex leaves it 0.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>

#define ROUNDS 100000

static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static long turn;  /* even: player 0 moves, odd: player 1 */
static long moves[2];
static sem_t ball[2];
static long hits[2];

static void *player(void *arg)
{
    long me = (long)arg;
    for (int i = 0; i < ROUNDS; i++) {
        pthread_mutex_lock(&mutex);
        while ((turn & 1) != me)
            pthread_cond_wait(&cond, &mutex);
        turn++;
        moves[me]++;
        pthread_cond_signal(&cond);
        pthread_mutex_unlock(&mutex);
    }
    for (int i = 0; i < ROUNDS; i++) {
        if (sem_wait(&ball[me]) != 0) {
            perror("sem_wait");
            exit(3);
        }
        hits[me]++;
        sem_post(&ball[1 - me]);
    }
    return NULL;
}

int main(void)
{
    pthread_mutex_lock(&mutex);
    const char *owner = mutex.__data.__owner != 0 ? "glibc" : "patchall";
    pthread_mutex_unlock(&mutex);

    sem_init(&ball[0], 0, 1);
    sem_init(&ball[1], 0, 0);
    pthread_t t[2];
    for (long i = 0; i < 2; i++) {
        if (pthread_create(&t[i], NULL, player, (void *)i) != 0) {
            perror("pthread_create");
            return 2;
        }
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);

    int left = -1;
    sem_getvalue(&ball[0], &left);
    if (turn != 2 * ROUNDS || moves[0] != ROUNDS || moves[1] != ROUNDS ||
        hits[0] != ROUNDS || hits[1] != ROUNDS || left != 1) {
        fprintf(stderr, "wrong counts: turn %ld moves %ld/%ld hits %ld/%ld left %d\n",
                turn, moves[0], moves[1], hits[0], hits[1], left);
        return 1;
    }
    if (pthread_mutex_destroy(&mutex) != 0 || pthread_cond_destroy(&cond) != 0)
        return 4;
    printf("pingpong %ld moves %ld hits, mutex owned by %s\n", turn, hits[0] + hits[1], owner);
    return 0;
}
