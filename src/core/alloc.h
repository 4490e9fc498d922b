/* Allocation that cannot fail: out of memory aborts with file:line, so callers have
 * no untestable NULL paths (STYLE.md habit 10). */
#ifndef KEEL_CORE_ALLOC_H
#define KEEL_CORE_ALLOC_H

#include <stddef.h>

void *keel_alloc_(size_t n, const char *file, int line);
void *keel_calloc_(size_t nmemb, size_t n, const char *file, int line);
void *keel_realloc_(void *p, size_t n, const char *file, int line);
char *keel_strndup_(const char *s, size_t n, const char *file, int line);

#define keel_alloc(n) keel_alloc_((n), __FILE__, __LINE__)
#define keel_calloc(m, n) keel_calloc_((m), (n), __FILE__, __LINE__)
#define keel_realloc(p, n) keel_realloc_((p), (n), __FILE__, __LINE__)
#define keel_strndup(s, n) keel_strndup_((s), (n), __FILE__, __LINE__)
#define keel_strdup(s) keel_strndup_((s), strlen(s), __FILE__, __LINE__)

#endif
