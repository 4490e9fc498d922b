/* Length-delimited byte strings: slices into buffers that someone else owns. */
#ifndef KEEL_CORE_STR_H
#define KEEL_CORE_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

struct keel_str {
    const char *p;
    size_t len;
};

#define KEEL_STR(lit) ((struct keel_str){ (lit), sizeof(lit) - 1 })

static inline struct keel_str keel_str_c(const char *s)
{
    return (struct keel_str){ s, s ? strlen(s) : 0 };
}

static inline bool keel_str_eq(struct keel_str a, struct keel_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static inline bool keel_str_caseeq(struct keel_str a, struct keel_str b)
{
    return a.len == b.len && (a.len == 0 || strncasecmp(a.p, b.p, a.len) == 0);
}

#endif
