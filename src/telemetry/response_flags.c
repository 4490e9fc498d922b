#include "telemetry/response_flags.h"

#include <string.h>

/* Rows of the flag table, indexed by bit: short code and long name with their lengths so
 * formatting is a sequence of memcpy's. */
struct rf_name {
    const char *s;
    unsigned char slen;
    const char *l;
    unsigned char llen;
};

static const struct rf_name rf_names[KEEL_RF_COUNT] = {
#define X(s, l) { #s, sizeof(#s) - 1, l, sizeof(l) - 1 },
    KEEL_RESPONSE_FLAGS(X)
#undef X
};

size_t keel_rf_format(uint32_t flags, int long_names, char *out, size_t cap)
{
    size_t n = 0;

    if (cap == 0)
        return 0;
    /* bits beyond the table are ignored: they have no name to print */
    flags &= (KEEL_RF_COUNT >= 32) ? ~0u : ((1u << KEEL_RF_COUNT) - 1u);
    if (flags == 0) {
        out[0] = '-';
        n = 1;
        if (cap < 2)
            n = 0;
        out[n] = '\0';
        return n;
    }
    for (unsigned i = 0; i < KEEL_RF_COUNT && flags != 0; i++) {
        if (!(flags & (1u << i)))
            continue;
        flags &= ~(1u << i);
        const char *p = long_names ? rf_names[i].l : rf_names[i].s;
        size_t len = long_names ? rf_names[i].llen : rf_names[i].slen;
        if (n > 0) {
            if (n + 1 >= cap)
                break;
            out[n++] = ',';
        }
        if (n + len >= cap) {
            len = cap - 1 - n;
            memcpy(out + n, p, len);
            n += len;
            break;
        }
        memcpy(out + n, p, len);
        n += len;
    }
    out[n] = '\0';
    return n;
}
