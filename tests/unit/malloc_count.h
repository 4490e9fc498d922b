/* Counts malloc/calloc/realloc calls made between malloc_count_start() and
 * malloc_count_stop(), by interposing them (forwarding to glibc's), for tests that prove a
 * path allocates nothing. Sanitizers and valgrind bring their own malloc: there the
 * interposition is off and malloc_count_works() says so, so a test asserts zero (which
 * then holds trivially) and checks the counter itself only where it counts. */
#ifndef KEEL_TEST_MALLOC_COUNT_H
#define KEEL_TEST_MALLOC_COUNT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define KEEL_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define KEEL_SANITIZED 1
#endif
#endif

static long malloc_calls;
static int malloc_counting;

#ifndef KEEL_SANITIZED
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t m);
extern void *__libc_realloc(void *p, size_t n);
void *malloc(size_t n)
{
    malloc_calls += malloc_counting;
    return __libc_malloc(n);
}
void *calloc(size_t n, size_t m)
{
    malloc_calls += malloc_counting;
    return __libc_calloc(n, m);
}
void *realloc(void *p, size_t n)
{
    malloc_calls += malloc_counting;
    return __libc_realloc(p, n);
}
#endif

static inline void malloc_count_start(void)
{
    malloc_calls = 0;
    malloc_counting = 1;
}

static inline long malloc_count_stop(void)
{
    malloc_counting = 0;
    return malloc_calls;
}

/* Does the counter see this build's mallocs? (No under a sanitizer or valgrind.) */
static inline bool malloc_count_works(void)
{
#ifdef KEEL_SANITIZED
    return false;
#else
    const char *preload = getenv("LD_PRELOAD"); /* valgrind preloads its own allocator */
    return preload == NULL || strstr(preload, "vgpreload") == NULL;
#endif
}

/* One malloc through pointers the compiler cannot see through (it may drop a plain
 * malloc/free pair): true when it was counted. */
static inline bool malloc_count_probe(void)
{
    void *(*volatile m)(size_t) = malloc;
    void (*volatile f)(void *) = free;
    malloc_count_start();
    f(m(16));
    return malloc_count_stop() == 1;
}

#endif
