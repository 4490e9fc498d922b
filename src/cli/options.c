/* What the subcommands' option parsers share. */
#include "cli/commands.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

int keel_cli_number(const char *cmd, const char *opt, const char *s, long long min, long long max,
                    long long *out)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < min || v > max) {
        if (max == LLONG_MAX)
            fprintf(stderr, "keel %s: --%s: '%s' is not a number >= %lld\n", cmd, opt, s, min);
        else
            fprintf(stderr, "keel %s: --%s: '%s' is not a number in %lld..%lld\n", cmd, opt, s, min, max);
        return -1;
    }
    *out = v;
    return 0;
}
