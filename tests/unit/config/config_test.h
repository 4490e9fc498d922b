/* Shared helpers for the config unit tests. */
#ifndef KEEL_TEST_CONFIG_H
#define KEEL_TEST_CONFIG_H

#include "config/config.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static inline struct keel_config *load_str(const char *name, const char *yaml, struct keel_diag *d)
{
    struct keel_config_source s = { name, yaml, strlen(yaml) };
    keel_diag_init(d);
    return keel_config_load_sources(&s, 1, d);
}

static inline const char *seeds_dir(void)
{
    return "examples/seeds";
}

static inline struct keel_config *load_seed(const char *file, struct keel_diag *d)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", seeds_dir(), file);
    const char *paths[1] = { path };
    keel_diag_init(d);
    return keel_config_load_paths(paths, 1, d);
}

#endif
