/* libFuzzer target: the Report decoder (ReportRequest bytes from the network). Every bag
 * it hands out holds readable values (each is formatted), and the proxy's encoder (delta
 * sets, a new batch whenever a bag drops an attribute) carries every bag to a second
 * decoder unchanged, value for value. Replayed by
 * tests/unit/mixer/test_fuzz_corpus.c. */
#include "core/err.h"
#include "mixer/mixer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static struct keel_mixer_decoder *dec, *dec2;
static struct keel_mixer_batch *batch;
static struct keel_buf msgs;         /* the re-encoded batches, gRPC-framed, one after another */
static struct keel_buf seen, seen2;  /* every bag handed out, formatted, in order */
static size_t added;

/* Every value of the bag formatted (so each is readable), with its attribute id. */
static void format_bag(const struct keel_attr_bag *bag, struct keel_buf *out)
{
    for (int id = 0; id < KEEL_ATTR__COUNT; id++) {
        const struct keel_value *v = keel_attr_bag_get(bag, id);
        if (v == NULL)
            continue;
        uint16_t k = (uint16_t)id;
        keel_buf_append(out, &k, sizeof(k));
        keel_value_format_json(v, out);
    }
    keel_buf_append(out, "\n", 1);
}

static void touch(void *arg, struct keel_attr_bag *bag)
{
    format_bag(bag, &seen);
    if (!keel_mixer_batch_add(batch, bag)) { /* drops an attribute: the batch goes first */
        keel_mixer_batch_finish(batch, &msgs);
        if (!keel_mixer_batch_add(batch, bag))
            __builtin_trap(); /* an empty batch takes any bag */
    }
    added++;
}

static void touch_again(void *arg, struct keel_attr_bag *bag)
{
    format_bag(bag, &seen2);
    ++*(size_t *)arg;
}

static void reset(struct keel_buf *b) { b->rpos = b->wpos = 0; }

static bool same(const struct keel_buf *a, const struct keel_buf *b)
{
    return keel_buf_len(a) == keel_buf_len(b) && (keel_buf_len(a) == 0 || !memcmp(keel_buf_rptr(a), keel_buf_rptr(b), keel_buf_len(a)));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (dec == NULL) {
        dec = keel_mixer_decoder_new();
        dec2 = keel_mixer_decoder_new();
        batch = keel_mixer_batch_new();
    }
    reset(&msgs);
    reset(&seen);
    reset(&seen2);
    added = 0;
    struct keel_mixer_decode_stats st = { 0 };
    const char *why = NULL;
    int n = keel_mixer_decode(dec, data, size, touch, NULL, &st, &why);
    if (n < 0 ? why == NULL || added != 0 : (size_t)n != added)
        __builtin_trap();
    if (n <= 0)
        return 0;
    keel_mixer_batch_finish(batch, &msgs);
    size_t again = 0;
    const uint8_t *p = (const uint8_t *)keel_buf_rptr(&msgs);
    size_t left = keel_buf_len(&msgs);
    while (left > 0) {
        size_t len = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];
        struct keel_mixer_decode_stats st2 = { 0 };
        if (left < 5 + len || keel_mixer_decode(dec2, p + 5, len, touch_again, &again, &st2, &why) < 0)
            __builtin_trap();
        p += 5 + len;
        left -= 5 + len;
    }
    if (again != (size_t)n || !same(&seen, &seen2))
        __builtin_trap();
    return 0;
}
