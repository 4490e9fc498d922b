/* libFuzzer target: the whole config load (libyaml tree with positions, alias budget,
 * binding, validation, expression compilation) on arbitrary bytes as one YAML file.
 * A load either yields a config or at least one error, and no diagnostic is empty. Replayed by tests/unit/config/test_fuzz_corpus.c. */
#include "config/config.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct keel_diag d;
    struct keel_config_source s = { "fuzz.yaml", (const char *)data, size };
    keel_diag_init(&d);
    struct keel_config *cfg = keel_config_load_sources(&s, 1, &d);
    if (cfg == NULL && d.errors == 0)
        __builtin_trap();
    for (size_t i = 0; i < d.n; i++)
        if (d.msgs[i] == NULL || d.msgs[i][0] == '\0')
            __builtin_trap();
    keel_config_unref(cfg);
    keel_diag_fini(&d);
    return 0;
}
