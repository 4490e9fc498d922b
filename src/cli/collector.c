/* keel collector: a Zipkin-compatible trace collector (src/tracing/collector.c). */
#include "cli/commands.h"

#include "tracing/collector.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

static const char usage_text[] =
    "usage: keel collector [OPTIONS]\n"
    "\n"
    "  --listen ADDR     address to serve on (127.0.0.1:9411)\n"
    "  --max-spans N     spans kept; the oldest traces go first (200000)\n"
    "  --max-bytes N     bytes of span records kept (268435456)\n"
    "  --max-body N      largest request body, also once gunzipped (16777216)\n"
    "\n"
    "accepts POST /api/v2/spans (Zipkin v2 JSON, gzip or deflate too) and answers Zipkin's\n"
    "query API: /api/v2/services, /spans, /remoteServices, /traces, /trace/ID, /traceMany,\n"
    "/dependencies, /autocompleteKeys; /health; /metrics (Prometheus text).\n";

enum { OPT_LISTEN = 256, OPT_MAX_SPANS, OPT_MAX_BYTES, OPT_MAX_BODY };

static const struct option options[] = {
    { "listen", required_argument, NULL, OPT_LISTEN },
    { "max-spans", required_argument, NULL, OPT_MAX_SPANS },
    { "max-bytes", required_argument, NULL, OPT_MAX_BYTES },
    { "max-body", required_argument, NULL, OPT_MAX_BODY },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
};

static int size_arg(const char *opt, const char *s, size_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s < '0' || *s > '9' || *end != '\0' || v == 0) {
        fprintf(stderr, "keel collector: --%s: '%s' is not a positive number\n", opt, s);
        return -1;
    }
    *out = (size_t)v;
    return 0;
}

int keel_cmd_collector(int argc, char **argv)
{
    struct keel_collector_options o;
    keel_collector_options_defaults(&o);
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (c) {
        case OPT_LISTEN: o.listen = optarg; break;
        case OPT_MAX_SPANS:
            if (size_arg("max-spans", optarg, &o.max_spans) < 0)
                return 2;
            break;
        case OPT_MAX_BYTES:
            if (size_arg("max-bytes", optarg, &o.max_bytes) < 0)
                return 2;
            break;
        case OPT_MAX_BODY:
            if (size_arg("max-body", optarg, &o.max_body) < 0)
                return 2;
            break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "keel collector: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    return keel_collector_run(&o);
}
