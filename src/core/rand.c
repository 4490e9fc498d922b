#include "core/rand.h"

#include "core/fmt.h"

#include <string.h>
#include <sys/random.h>
#include <time.h>

static _Thread_local uint64_t s[4];
static _Thread_local int seeded;

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static void seed(void)
{
    if (getrandom(s, sizeof(s), 0) != (ssize_t)sizeof(s)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s[0] = (uint64_t)ts.tv_nsec ^ 0x9e3779b97f4a7c15ULL;
        s[1] = (uint64_t)ts.tv_sec * 0xbf58476d1ce4e5b9ULL;
        s[2] = (uint64_t)(uintptr_t)&ts;
        s[3] = 0x94d049bb133111ebULL;
    }
    seeded = 1;
}

uint64_t keel_rand64(void)
{
    if (!seeded)
        seed();
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

void keel_uuid4(char out[36])
{
    /* the 16 random bytes, in order, are a's then b's, least significant byte first */
    uint64_t a = __builtin_bswap64(keel_rand64()), b = __builtin_bswap64(keel_rand64());
    a = (a & ~(0xf0ull << 8)) | (0x40ull << 8);          /* byte 6: version 4 */
    b = (b & ~(0xc0ull << 56)) | (0x80ull << 56);        /* byte 8: variant 10xx */
    char h[32];
    keel_fmt_hex16(a, h);
    keel_fmt_hex16(b, h + 16);
    memcpy(out, h, 8);
    out[8] = '-';
    memcpy(out + 9, h + 8, 4);
    out[13] = '-';
    memcpy(out + 14, h + 12, 4);
    out[18] = '-';
    memcpy(out + 19, h + 16, 4);
    out[23] = '-';
    memcpy(out + 24, h + 20, 12);
}
