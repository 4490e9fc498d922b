/* Number formatting shared by the attribute text forms and the Prometheus exposition. */
#ifndef KEEL_CORE_FMT_H
#define KEEL_CORE_FMT_H

#include <stddef.h>
#include <stdint.h>

#define KEEL_FMT_DOUBLE_MAX 400 /* 'f' of 1.7e308 is 309 digits */

/* Go's strconv.FormatFloat(d, fmt, -1, 64): the shortest decimal that reads back as d.
 * 'f': never an exponent (1e21 -> "1000000000000000000000", 0.000001 -> "0.000001").
 * 'g': an exponent when the decimal exponent is < -4 or >= 6 ("1e+06", "1e-05"),
 *      else as 'f'. NaN, +Inf, -Inf and -0 as Go writes them. dst must hold 32 bytes
 * for 'g', KEEL_FMT_DOUBLE_MAX for 'f'; it is NUL-terminated; returns the length. */
size_t keel_fmt_double(double d, char fmt, char *dst);

/* v in decimal at dst (no NUL; at most 20 bytes); returns the length. printf costs
 * ~400 instructions a call, this ~10 a digit: it runs several times per request. */
static inline size_t keel_fmt_u64(char *dst, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        dst[i] = tmp[n - 1 - i];
    return n;
}

#endif
