/* libFuzzer target: the Report decoder (ReportRequest bytes from the network). Every bag
 * it hands out holds readable values (each is formatted), and re-encoding a bag with the
 * proxy's encoder decodes again without error. Replayed by
 * tests/unit/mixer/test_fuzz_corpus.c. */
#include "core/err.h"
#include "mixer/mixer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static struct keel_mixer_decoder *dec, *dec2;
static struct keel_mixer_batch *batch;

static void touch(void *arg, struct keel_attr_bag *bag)
{
    struct keel_buf out = { 0 };
    for (int id = 0; id < KEEL_ATTR__COUNT; id++) {
        const struct keel_value *v = keel_attr_bag_get(bag, id);
        if (v != NULL)
            keel_value_format_json(v, &out);
    }
    keel_buf_release(&out);
    keel_mixer_batch_add(batch, bag);
}

static void count(void *arg, struct keel_attr_bag *bag) { ++*(size_t *)arg; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (dec == NULL) {
        dec = keel_mixer_decoder_new();
        dec2 = keel_mixer_decoder_new();
        batch = keel_mixer_batch_new();
    }
    struct keel_mixer_decode_stats st = { 0 };
    const char *why = NULL;
    int n = keel_mixer_decode(dec, data, size, touch, NULL, &st, &why);
    if (n < 0 ? why == NULL || keel_mixer_batch_count(batch) != 0 : (size_t)n != keel_mixer_batch_count(batch))
        __builtin_trap();
    if (n <= 0)
        return 0;
    struct keel_buf msg = { 0 };
    keel_mixer_batch_finish(batch, &msg);
    size_t again = 0;
    struct keel_mixer_decode_stats st2 = { 0 };
    int m = keel_mixer_decode(dec2, (const uint8_t *)keel_buf_rptr(&msg) + 5, keel_buf_len(&msg) - 5, count, &again,
                              &st2, &why);
    if (m != n || again != (size_t)n)
        __builtin_trap();
    keel_buf_release(&msg);
    return 0;
}
