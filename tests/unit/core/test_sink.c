#include "core/sink.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *d = malloc((size_t)n + 1);
    assert_int_equal(fread(d, 1, (size_t)n, fp), (size_t)n);
    d[n] = '\0';
    fclose(fp);
    *len = (size_t)n;
    return d;
}

static void temp_path(char *path, size_t n)
{
    snprintf(path, n, "/tmp/keel-test-sink-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
}

/* ---- two threads into a file ---- */

#define PER_THREAD 20000

struct producer {
    struct keel_sink *s;
    int id;
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    char batch[512];
    int seq = 0, batches = 0;
    while (seq < PER_THREAD) {
        /* 1..3 lines per submit, as a worker flushing its loop turn */
        size_t n = 0;
        uint64_t lines = 0;
        int want = 1 + seq % 3;
        for (int k = 0; k < want && seq < PER_THREAD; k++, seq++, lines++)
            n += (size_t)snprintf(batch + n, sizeof(batch) - n, "t%d %06d padding-padding-padding\n", p->id, seq);
        keel_sink_submit(p->s, batch, n, lines);
        if (keel_sink_lines_dropped(p->s) > 0)
            break;
        if (++batches % 300 == 0)
            keel_sink_flush(p->s); /* keep the ring from overflowing: this test wants no drops */
    }
    return NULL;
}

static void two_threads_complete_and_ordered(void **state)
{
    char path[64], err[128];
    temp_path(path, sizeof(path));
    struct keel_sink *s = keel_sink_open(path, 1 << 20, err, sizeof(err));
    assert_non_null(s);
    struct producer p[2] = { { s, 0 }, { s, 1 } };
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, produce, &p[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    keel_sink_flush(s);
    assert_int_equal(keel_sink_lines_dropped(s), 0);
    assert_int_equal(keel_sink_lines_written(s), 2 * PER_THREAD);

    size_t len;
    char *d = read_file(path, &len);
    int next[2] = { 0, 0 };
    char *line = d;
    while (line < d + len) {
        char *nl = memchr(line, '\n', (size_t)(d + len - line));
        assert_non_null(nl);
        int id, seq;
        char pad[64];
        assert_int_equal(nl - line, (long)strlen("t0 000000 padding-padding-padding"));
        assert_int_equal(sscanf(line, "t%d %d %63s", &id, &seq, pad), 3);
        assert_true(id == 0 || id == 1);
        assert_int_equal(seq, next[id]);
        assert_string_equal(pad, "padding-padding-padding");
        next[id]++;
        line = nl + 1;
    }
    assert_int_equal(next[0], PER_THREAD);
    assert_int_equal(next[1], PER_THREAD);
    free(d);
    keel_sink_close(s);
    /* appends to an existing file */
    s = keel_sink_open(path, 4096, err, sizeof(err));
    keel_sink_submit(s, "last\n", 5, 1);
    keel_sink_close(s);
    d = read_file(path, &len);
    assert_int_equal(len, 2 * PER_THREAD * (strlen("t0 000000 padding-padding-padding") + 1) + 5);
    assert_memory_equal(d + len - 5, "last\n", 5);
    free(d);
    unlink(path);
}

/* ---- a reader that never reads: the sink drops instead of blocking ---- */

struct drainer {
    int fd;
    size_t bytes;
};

static void *drain(void *arg)
{
    struct drainer *dr = arg;
    char b[65536];
    ssize_t n;
    while ((n = read(dr->fd, b, sizeof(b))) > 0)
        dr->bytes += (size_t)n;
    return NULL;
}

static void blocked_pipe_drops_and_counts(void **state)
{
    int pfd[2];
    char path[64], err[128];
    assert_int_equal(pipe(pfd), 0);
    fcntl(pfd[1], F_SETPIPE_SZ, 4096);
    snprintf(path, sizeof(path), "/proc/self/fd/%d", pfd[1]);
    struct keel_sink *s = keel_sink_open(path, 8192, err, sizeof(err));
    assert_non_null(s);

    char linebuf[101];
    memset(linebuf, 'x', 100);
    linebuf[100] = '\n';
    const int n = 100000;
    double t0 = now_s();
    for (int i = 0; i < n; i++)
        keel_sink_submit(s, linebuf, sizeof(linebuf), 1);
    double elapsed = now_s() - t0;
    /* 10 MB into a 4 KB pipe nobody reads: submit must not have waited for the reader */
    assert_true(elapsed < 2.0);
    uint64_t dropped = keel_sink_lines_dropped(s);
    assert_true(dropped > (uint64_t)n / 2);
    /* a batch larger than the whole ring is dropped at once */
    static char huge[10000];
    keel_sink_submit(s, huge, sizeof(huge), 7);
    assert_int_equal(keel_sink_lines_dropped(s), dropped + 7);

    /* now someone reads: close flushes what was accepted */
    struct drainer dr = { pfd[0], 0 };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, drain, &dr), 0);
    uint64_t written_before_close = 0;
    keel_sink_flush(s);
    written_before_close = keel_sink_lines_written(s);
    assert_int_equal(written_before_close + keel_sink_lines_dropped(s), (uint64_t)n + 7);
    keel_sink_close(s);
    close(pfd[1]);
    pthread_join(t, NULL);
    close(pfd[0]);
    assert_int_equal(dr.bytes, written_before_close * sizeof(linebuf));
}

/* ---- close gives up on a pipe nobody reads, within its deadline ---- */

static void close_is_bounded_on_a_stalled_pipe(void **state)
{
    int pfd[2];
    char path[64], err[128];
    assert_int_equal(pipe(pfd), 0);
    fcntl(pfd[1], F_SETPIPE_SZ, 4096);
    snprintf(path, sizeof(path), "/proc/self/fd/%d", pfd[1]);
    struct keel_sink *s = keel_sink_open(path, 65536, err, sizeof(err));
    assert_non_null(s);
    char linebuf[101];
    memset(linebuf, 'y', 100);
    linebuf[100] = '\n';
    for (int i = 0; i < 500; i++) /* 50 KB: more than the pipe holds */
        keel_sink_submit(s, linebuf, sizeof(linebuf), 1);
    double t0 = now_s();
    keel_sink_close(s); /* nobody reads: the writer is stuck in write(2) */
    double took = now_s() - t0;
    assert_true(took >= 1.5 && took < 4.0);
    close(pfd[1]);
    close(pfd[0]);
}

/* ---- write errors count as drops and the writer keeps going ---- */

static void write_errors_count_as_dropped(void **state)
{
    char err[128];
    /* ENOSPC */
    struct keel_sink *s = keel_sink_open("/dev/full", 4096, err, sizeof(err));
    assert_non_null(s);
    keel_sink_submit(s, "a\nb\n", 4, 2);
    keel_sink_flush(s);
    keel_sink_submit(s, "c\n", 2, 1);
    keel_sink_flush(s);
    assert_int_equal(keel_sink_lines_dropped(s), 3);
    assert_int_equal(keel_sink_lines_written(s), 0);
    keel_sink_close(s);

    /* EPIPE: the reader is gone; the process must survive (no SIGPIPE death) */
    int pfd[2];
    char path[64];
    assert_int_equal(pipe(pfd), 0);
    snprintf(path, sizeof(path), "/proc/self/fd/%d", pfd[1]);
    s = keel_sink_open(path, 4096, err, sizeof(err));
    assert_non_null(s);
    close(pfd[0]);
    close(pfd[1]);
    keel_sink_submit(s, "x\ny\n", 4, 2);
    keel_sink_flush(s);
    assert_int_equal(keel_sink_lines_dropped(s), 2);
    keel_sink_close(s);
}

static void open_errors_and_std_streams(void **state)
{
    char err[128];
    assert_null(keel_sink_open("/nonexistent-dir/x.log", 4096, err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent-dir/x.log"));
    assert_null(keel_sink_open("/tmp/x", 0, err, sizeof(err)));

    /* /dev/stderr is the process's fd 2 and stays open after close */
    struct keel_sink *s = keel_sink_open("/dev/stderr", 4096, err, sizeof(err));
    assert_non_null(s);
    keel_sink_submit(s, "sink test line on stderr\n", 25, 1);
    keel_sink_close(s);
    assert_true(fcntl(2, F_GETFD) >= 0);
    s = keel_sink_open("/dev/stdout", 4096, err, sizeof(err));
    assert_non_null(s);
    keel_sink_close(s);
    assert_true(fcntl(1, F_GETFD) >= 0);
}

static void flush_and_close_semantics(void **state)
{
    char path[64], err[128];
    temp_path(path, sizeof(path));
    struct keel_sink *s = keel_sink_open(path, 1000, err, sizeof(err));
    /* flush on an idle sink returns at once */
    keel_sink_flush(s);
    /* wrap around the ring many times; each flush leaves everything on disk */
    size_t total = 0;
    for (int i = 0; i < 500; i++) {
        char l[64];
        int n = snprintf(l, sizeof(l), "line %d %.*s\n", i, i % 40, "----------------------------------------");
        keel_sink_submit(s, l, (size_t)n, 1);
        total += (size_t)n;
        if (i % 7 == 0) {
            keel_sink_flush(s);
            struct stat st;
            assert_int_equal(stat(path, &st), 0);
            assert_int_equal((size_t)st.st_size, total);
        }
    }
    /* close flushes the rest */
    keel_sink_close(s);
    size_t len;
    char *d = read_file(path, &len);
    assert_int_equal(len, total);
    assert_memory_equal(d, "line 0 \nline 1 -\n", 17);
    free(d);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(two_threads_complete_and_ordered),
        cmocka_unit_test(blocked_pipe_drops_and_counts),
        cmocka_unit_test(write_errors_count_as_dropped),
        cmocka_unit_test(open_errors_and_std_streams),
        cmocka_unit_test(flush_and_close_semantics),
        cmocka_unit_test(close_is_bounded_on_a_stalled_pipe),
    };
    return cmocka_run_group_tests_name("core/sink", tests, NULL, NULL);
}
