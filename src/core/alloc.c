#include "core/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(size_t n, const char *file, int line)
{
    fprintf(stderr, "keel: out of memory allocating %zu bytes at %s:%d\n", n, file, line);
    abort();
}

void *keel_alloc_(size_t n, const char *file, int line)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        oom(n, file, line);
    return p;
}

void *keel_calloc_(size_t nmemb, size_t n, const char *file, int line)
{
    void *p = calloc(nmemb ? nmemb : 1, n ? n : 1);
    if (p == NULL)
        oom(nmemb * n, file, line);
    return p;
}

void *keel_realloc_(void *p, size_t n, const char *file, int line)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        oom(n, file, line);
    return q;
}

char *keel_strndup_(const char *s, size_t n, const char *file, int line)
{
    char *d = keel_alloc_(n + 1, file, line);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}
