/* The attribute vocabulary: name <-> id <-> type, expanded from attr.def. */
#include "attr/attr.h"

#include <string.h>

static const struct vocab {
    const char *name;
    unsigned char len;
    unsigned char type;
} vocab[KEEL_ATTR__COUNT] = {
#define X(id, name, type) { name, sizeof(name) - 1, KEEL_VALUE_##type },
#include "attr/attr.def"
#undef X
};

static const char *const type_names[KEEL_VALUE__COUNT] = {
#define X(t, s) s,
    KEEL_VALUE_TYPES(X)
#undef X
};

int keel_attr_lookup(const char *name, size_t len)
{
    /* Config-time only; ~150 rows, length checked first. */
    for (int i = 0; i < KEEL_ATTR__COUNT; i++)
        if (vocab[i].len == len && memcmp(vocab[i].name, name, len) == 0)
            return i;
    return -1;
}

const char *keel_attr_name(int id)
{
    return id >= 0 && id < KEEL_ATTR__COUNT ? vocab[id].name : NULL;
}

enum keel_value_type keel_attr_type(int id)
{
    return id >= 0 && id < KEEL_ATTR__COUNT ? (enum keel_value_type)vocab[id].type : KEEL_VALUE_NONE;
}

const char *keel_value_type_name(enum keel_value_type t)
{
    return (unsigned)t < KEEL_VALUE__COUNT ? type_names[t] : "?";
}

/* Optimal string alignment distance (Levenshtein + adjacent transposition), capped. */
static int distance(const char *a, size_t la, const char *b, size_t lb)
{
    enum { MAXL = 64 };
    int d[3][MAXL + 1];
    if (la > MAXL || lb > MAXL)
        return 99;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int *cur = d[i % 3], *prev = d[(i - 1) % 3], *prev2 = d[(i + 1) % 3];
        cur[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int cost = a[i - 1] != b[j - 1];
            int v = prev[j] + 1;
            if (cur[j - 1] + 1 < v)
                v = cur[j - 1] + 1;
            if (prev[j - 1] + cost < v)
                v = prev[j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && prev2[j - 2] + 1 < v)
                v = prev2[j - 2] + 1;
            cur[j] = v;
        }
    }
    return d[la % 3][lb];
}

const char *keel_attr_suggest(const char *name, size_t len)
{
    const char *best = NULL;
    int bestd = 3;
    for (int i = 0; i < KEEL_ATTR__COUNT; i++) {
        int dd = distance(name, len, vocab[i].name, vocab[i].len);
        if (dd < bestd) {
            bestd = dd;
            best = vocab[i].name;
        }
    }
    return best;
}
