/* Line sink: a byte ring filled by any thread under a mutex held only for a memcpy, and
 * one writer thread that writes the filled region with blocking write(2) outside the lock.
 * Ring space is returned only after the bytes are written, so the writer reads straight
 * from the ring while submitters fill the free part.
 *
 * The writer lingers up to LINGER_NS after it is woken so that the lines of many event-
 * loop turns go out in one write: waking it on every turn cost a fifth of a busy
 * proxy's CPU in context switches. It hurries when the ring is a quarter full, and for
 * flush and close. */
#include "core/sink.h"

#include "core/alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LINGER_NS 10000000 /* 10 ms: Envoy flushes its access logs every second */
#define CLOSE_DEADLINE_S 2 /* close gives up on a file that does not drain (a stalled pipe) */

struct keel_sink {
    int fd;
    bool own_fd;
    char *ring;
    size_t cap;

    pthread_mutex_t mu;
    pthread_cond_t work;    /* writer waits: bytes queued or stopping */
    pthread_cond_t done;    /* flushers wait: done_bytes advanced */
    size_t head;            /* next free byte (mod cap) */
    size_t used;            /* bytes queued, including those being written */
    uint64_t queued_lines;  /* lines not yet taken by the writer */
    uint64_t inflight_lines; /* lines of the batch being written */
    uint64_t submitted_bytes; /* monotonic, accepted bytes */
    uint64_t done_bytes;    /* monotonic, bytes written or given up */
    bool stop;
    bool writer_idle;       /* the writer sleeps until woken (nothing queued) */
    bool hurry;             /* a flush waits: no lingering */

    pthread_t thread;
    _Atomic uint64_t written;
    _Atomic uint64_t dropped;
};

static void set_err(char *err, size_t errlen, const char *fmt, const char *a, int e)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, fmt, a, strerror(e));
}

static size_t count_nl(const char *p, size_t n)
{
    size_t c = 0;
    const char *end = p + n;
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        c++;
        p++;
    }
    return c;
}

/* Write p[0..n); returns bytes written (< n only on a write error). */
static size_t write_all(int fd, const char *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, p + off, n - off);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EPIPE) {
            /* SIGPIPE is blocked in this thread; take the pending one back */
            sigset_t pipe_set;
            struct timespec zero = { 0, 0 };
            sigemptyset(&pipe_set);
            sigaddset(&pipe_set, SIGPIPE);
            sigtimedwait(&pipe_set, NULL, &zero);
        }
        break;
    }
    return off;
}

static void *writer_main(void *arg)
{
    struct keel_sink *s = arg;

    /* cancellable only inside write(2), never while holding the mutex: close cancels a
     * writer stuck on a file that does not drain */
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->used == 0 && !s->stop) {
            s->writer_idle = true;
            pthread_cond_wait(&s->work, &s->mu);
            s->writer_idle = false;
        }
        if (s->used == 0 && s->stop)
            break;
        if (!s->stop && !s->hurry && s->used < s->cap / 4) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_nsec += LINGER_NS;
            if (until.tv_nsec >= 1000000000) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000;
            }
            while (!s->stop && !s->hurry && s->used < s->cap / 4)
                if (pthread_cond_timedwait(&s->work, &s->mu, &until) == ETIMEDOUT)
                    break;
        }
        /* take everything queued: [tail, tail+used) in at most two pieces */
        size_t len = s->used;
        size_t tail = (s->head + s->cap - s->used) % s->cap;
        uint64_t lines = s->queued_lines;
        s->queued_lines = 0;
        s->inflight_lines = lines;
        pthread_mutex_unlock(&s->mu);

        size_t first = len < s->cap - tail ? len : s->cap - tail;
        int state;
        pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &state);
        size_t w = write_all(s->fd, s->ring + tail, first);
        if (w == first && len > first)
            w += write_all(s->fd, s->ring, len - first);
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &state);
        if (w == len) {
            atomic_fetch_add(&s->written, lines);
        } else {
            /* the write failed (EPIPE, ENOSPC, ...): the complete lines that made it out
             * count as written, the rest as dropped; keep going with the next batch */
            uint64_t ok = count_nl(s->ring + tail, w < first ? w : first);
            if (w > first)
                ok += count_nl(s->ring, w - first);
            if (ok > lines)
                ok = lines;
            atomic_fetch_add(&s->written, ok);
            atomic_fetch_add(&s->dropped, lines - ok);
        }

        pthread_mutex_lock(&s->mu);
        s->inflight_lines = 0;
        s->used -= len;
        s->done_bytes += len;
        if (s->done_bytes >= s->submitted_bytes)
            s->hurry = false;
        pthread_cond_broadcast(&s->done);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

struct keel_sink *keel_sink_open(const char *path, size_t capacity, char *err, size_t errlen)
{
    int fd;
    bool own = true;

    if (path == NULL || capacity == 0) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "sink: %s", path == NULL ? "no path" : "capacity must be > 0");
        return NULL;
    }
    if (strcmp(path, "/dev/stdout") == 0) {
        fd = STDOUT_FILENO;
        own = false;
    } else if (strcmp(path, "/dev/stderr") == 0) {
        fd = STDERR_FILENO;
        own = false;
    } else {
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) {
            set_err(err, errlen, "sink: cannot open %s: %s", path, errno);
            return NULL;
        }
    }

    struct keel_sink *s = keel_calloc(1, sizeof(*s));
    s->fd = fd;
    s->own_fd = own;
    s->cap = capacity;
    s->ring = keel_alloc(capacity);
    atomic_init(&s->written, 0);
    atomic_init(&s->dropped, 0);
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t mono;
    pthread_condattr_init(&mono);
    pthread_condattr_setclock(&mono, CLOCK_MONOTONIC);
    pthread_cond_init(&s->work, &mono);
    pthread_condattr_destroy(&mono);
    pthread_cond_init(&s->done, NULL);

    /* the writer runs with every signal blocked: signals go to the loop threads, and a
     * closed pipe gives EPIPE instead of killing the process */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&s->thread, NULL, writer_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        set_err(err, errlen, "sink: cannot start writer thread for %s: %s", path, rc);
        pthread_cond_destroy(&s->done);
        pthread_cond_destroy(&s->work);
        pthread_mutex_destroy(&s->mu);
        if (own)
            close(fd);
        free(s->ring);
        free(s);
        return NULL;
    }
    return s;
}

void keel_sink_submit(struct keel_sink *s, const char *p, size_t len, uint64_t n_lines)
{
    if (len == 0)
        return;
    pthread_mutex_lock(&s->mu);
    if (s->stop || len > s->cap - s->used) {
        pthread_mutex_unlock(&s->mu);
        atomic_fetch_add(&s->dropped, n_lines);
        return;
    }
    size_t first = len < s->cap - s->head ? len : s->cap - s->head;
    memcpy(s->ring + s->head, p, first);
    if (len > first)
        memcpy(s->ring, p + first, len - first);
    s->head = (s->head + len) % s->cap;
    s->used += len;
    s->queued_lines += n_lines;
    s->submitted_bytes += len;
    /* wake a sleeping writer, or cut its lingering short once a quarter is queued */
    bool wake = s->writer_idle || (s->used >= s->cap / 4 && s->used - len < s->cap / 4);
    pthread_mutex_unlock(&s->mu);
    if (wake)
        pthread_cond_signal(&s->work);
}

void keel_sink_flush(struct keel_sink *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t target = s->submitted_bytes;
    if (s->done_bytes < target) {
        s->hurry = true;
        pthread_cond_signal(&s->work);
    }
    while (s->done_bytes < target)
        pthread_cond_wait(&s->done, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

void keel_sink_close(struct keel_sink *s)
{
    keel_sink_close_counted(s, NULL, NULL);
}

void keel_sink_close_counted(struct keel_sink *s, uint64_t *written, uint64_t *dropped)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = true; /* the writer writes what is queued, then ends */
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->mu);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += CLOSE_DEADLINE_S;
    if (pthread_timedjoin_np(s->thread, NULL, &deadline) != 0) {
        /* stuck in write(2) on a file nobody drains: what is left is dropped, counted */
        pthread_cancel(s->thread);
        pthread_join(s->thread, NULL);
        atomic_fetch_add(&s->dropped, s->queued_lines + s->inflight_lines);
    }
    if (written != NULL)
        *written = atomic_load(&s->written);
    if (dropped != NULL)
        *dropped = atomic_load(&s->dropped);
    if (s->own_fd)
        close(s->fd);
    pthread_cond_destroy(&s->done);
    pthread_cond_destroy(&s->work);
    pthread_mutex_destroy(&s->mu);
    free(s->ring);
    free(s);
}

uint64_t keel_sink_lines_written(const struct keel_sink *s)
{
    return atomic_load(&((struct keel_sink *)s)->written);
}

uint64_t keel_sink_lines_dropped(const struct keel_sink *s)
{
    return atomic_load(&((struct keel_sink *)s)->dropped);
}
