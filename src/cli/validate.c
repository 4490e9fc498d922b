/* keel validate PATH...: load files/dirs, print every diagnostic, exit 1 on errors. */
#include "cli/commands.h"

#include "config/config.h"

#include <stdio.h>
#include <string.h>

int keel_cmd_validate(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fprintf(argc < 2 ? stderr : stdout,
                "usage: keel validate PATH...\n\n"
                "Check config files or directories (every *.yaml / *.yml). Prints each problem as\n"
                "FILE:LINE:COL: error|warning: MESSAGE; exits 0 when valid (warnings allowed), 1 otherwise.\n");
        return argc < 2 ? 2 : 0;
    }
    struct keel_diag d;
    keel_diag_init(&d);
    struct keel_config *cfg = keel_config_load_paths((const char *const *)argv + 1, (size_t)argc - 1, &d);
    for (size_t i = 0; i < d.n; i++)
        fprintf(stderr, "%s\n", d.msgs[i]);
    int rc = 0;
    if (cfg == NULL) {
        fprintf(stderr, "%zu error%s, %zu warning%s\n", d.errors, d.errors == 1 ? "" : "s", d.warnings,
                d.warnings == 1 ? "" : "s");
        rc = 1;
    } else {
        size_t total = 0;
        for (int k = 0; k < KEEL_CONFIG_KIND_COUNT; k++)
            total += cfg->count[k];
        printf("valid: %zu resource%s, %zu warning%s\n", total, total == 1 ? "" : "s", d.warnings,
               d.warnings == 1 ? "" : "s");
        keel_config_unref(cfg);
    }
    keel_diag_fini(&d);
    return rc;
}
