#include "core/rand.h"

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
    static const char hex[] = "0123456789abcdef";
    uint64_t a = keel_rand64(), b = keel_rand64();
    unsigned char r[16];
    for (int i = 0; i < 8; i++) {
        r[i] = (unsigned char)(a >> (8 * i));
        r[8 + i] = (unsigned char)(b >> (8 * i));
    }
    r[6] = (r[6] & 0x0f) | 0x40; /* version 4 */
    r[8] = (r[8] & 0x3f) | 0x80; /* variant 10xx */
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[r[i] >> 4];
        out[o++] = hex[r[i] & 15];
    }
}
