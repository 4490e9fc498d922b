/* A line sink that never blocks the event loop: workers copy finished lines into a
 * bounded in-memory ring; one writer thread drains it to the file with blocking writes.
 * When the ring is full the submitted lines are dropped and counted, never silently. */
#ifndef KEEL_CORE_SINK_H
#define KEEL_CORE_SINK_H

#include <stddef.h>
#include <stdint.h>

struct keel_sink;

/* path: a file (created/appended), "/dev/stdout" or "/dev/stderr" (the process's fd 1/2).
 * capacity: ring size in bytes. NULL with a message in err on failure. */
struct keel_sink *keel_sink_open(const char *path, size_t capacity, char *err, size_t errlen);
/* Write what is queued, stop the writer thread, close the file, free. A file that does
 * not drain within 2 s (a pipe nobody reads) is given up on: the rest is dropped and
 * counted. */
void keel_sink_close(struct keel_sink *s);
/* The same, giving the final counts of lines written and dropped. */
void keel_sink_close_counted(struct keel_sink *s, uint64_t *written, uint64_t *dropped);
/* Queue n_lines complete lines held in p[0..len). Thread-safe; holds a mutex only for a
 * memcpy. If they do not fit, all n_lines are dropped and counted. */
void keel_sink_submit(struct keel_sink *s, const char *p, size_t len, uint64_t n_lines);
/* Block until everything submitted so far has been written (for tests and shutdown). */
void keel_sink_flush(struct keel_sink *s);
uint64_t keel_sink_lines_written(const struct keel_sink *s);
uint64_t keel_sink_lines_dropped(const struct keel_sink *s);

#endif
