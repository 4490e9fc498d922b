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

/* The 8 low nibbles of v as 8 lower-case hex digits, most significant first, in one
 * word: nibbles spread to bytes, then '0'-'9' / 'a'-'f' added to all eight at once. */
static inline uint64_t keel_fmt_hex8_word(uint32_t v)
{
    uint64_t x = v;
    x = (x | x << 16) & 0x0000ffff0000ffffull;
    x = (x | x << 8) & 0x00ff00ff00ff00ffull;
    x = (x | x << 4) & 0x0f0f0f0f0f0f0f0full; /* byte i: nibble i, least significant first */
    uint64_t letter = ((x + 0x0606060606060606ull) >> 4) & 0x0101010101010101ull;
    x += 0x3030303030303030ull + letter * ('a' - '0' - 10);
    return __builtin_bswap64(x); /* little-endian store: most significant nibble first */
}

/* v as 16 lower-case hex digits (trace and span ids, request ids: several a request). */
static inline void keel_fmt_hex16(uint64_t v, char out[16])
{
    uint64_t hi = keel_fmt_hex8_word((uint32_t)(v >> 32)), lo = keel_fmt_hex8_word((uint32_t)v);
    __builtin_memcpy(out, &hi, 8);
    __builtin_memcpy(out + 8, &lo, 8);
}

#endif
