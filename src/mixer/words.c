/* Mixer's global word dictionary, and names -> attribute ids by hash for the report
 * path (keel_attr_lookup is a config-time scan). */
#include "mixer/mixer.h"

#include <pthread.h>
#include <string.h>

static const struct keel_str words[] = {
#define W(s) { s, sizeof(s) - 1 },
#include "mixer/words.def"
#undef W
};
#define N_WORDS (sizeof(words) / sizeof(words[0]))

/* open addressing, power of two > 2x the entries */
#define ATTR_SLOTS 512
#define WORD_SLOTS 512
static int16_t attr_slot[ATTR_SLOTS]; /* attr id + 1, 0 empty */
static int16_t word_slot[WORD_SLOTS]; /* word index + 1 */
static size_t longest; /* no longer word is in the dictionary */
static pthread_once_t once = PTHREAD_ONCE_INIT;

_Static_assert(KEEL_ATTR__COUNT * 2 < ATTR_SLOTS, "attribute hash too small");
_Static_assert(N_WORDS * 2 < WORD_SLOTS, "word hash too small");

/* 8 bytes a step (the report path hashes every string value of a bag) */
uint32_t keel_mixer_hash(const char *s, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15u ^ n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdu;
        h ^= h >> 32;
    }
    uint64_t w = 0;
    memcpy(&w, s + i, n - i);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53u;
    h ^= h >> 29;
    return (uint32_t)h;
}

static void build(void)
{
    for (int id = 0; id < KEEL_ATTR__COUNT; id++) {
        const char *name = keel_attr_name(id);
        uint32_t j = keel_mixer_hash(name, strlen(name)) & (ATTR_SLOTS - 1);
        while (attr_slot[j])
            j = (j + 1) & (ATTR_SLOTS - 1);
        attr_slot[j] = (int16_t)(id + 1);
    }
    for (size_t i = 0; i < N_WORDS; i++) {
        uint32_t j = keel_mixer_hash(words[i].p, words[i].len) & (WORD_SLOTS - 1);
        while (word_slot[j])
            j = (j + 1) & (WORD_SLOTS - 1);
        word_slot[j] = (int16_t)(i + 1);
        if (words[i].len > longest)
            longest = words[i].len;
    }
}

size_t keel_mixer_global_words(void) { return N_WORDS; }

struct keel_str keel_mixer_global_word(size_t i) { return words[i]; }

int keel_mixer_attr_id(const char *name, size_t len)
{
    pthread_once(&once, build);
    for (uint32_t j = keel_mixer_hash(name, len) & (ATTR_SLOTS - 1); attr_slot[j]; j = (j + 1) & (ATTR_SLOTS - 1)) {
        const char *n = keel_attr_name(attr_slot[j] - 1);
        if (strlen(n) == len && !memcmp(n, name, len))
            return attr_slot[j] - 1;
    }
    return -1;
}

int keel_mixer_global_index(const char *w, size_t len)
{
    return keel_mixer_global_index_h(w, len, keel_mixer_hash(w, len));
}

int keel_mixer_global_index_h(const char *w, size_t len, uint32_t h)
{
    pthread_once(&once, build);
    if (len > longest)
        return -1;
    for (uint32_t j = h & (WORD_SLOTS - 1); word_slot[j]; j = (j + 1) & (WORD_SLOTS - 1)) {
        const struct keel_str *s = &words[word_slot[j] - 1];
        if (s->len == len && !memcmp(s->p, w, len))
            return word_slot[j] - 1;
    }
    return -1;
}
