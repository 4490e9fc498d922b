/* keel sample-app: the demo service. Options map onto struct keel_sample_app_options. */
#include "cli/commands.h"

#include "core/alloc.h"
#include "mesh/sample_app.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: keel sample-app [OPTIONS]\n"
    "\n"
    "  --name NAME         service name, shown in answers (sample-app)\n"
    "  --version V         version, shown in answers (v1)\n"
    "  --listen ADDR       address to serve on (default 127.0.0.1:$PORT)\n"
    "  --call URL          http://HOST[:PORT]/PATH called by the main page, in order\n"
    "                      (repeatable); through $HTTP_PROXY when set\n"
    "  --latency MS        delay added to every response but /healthz (0)\n"
    "  --error-rate F      fraction 0..1 of main-page requests answered 500 (0)\n"
    "  --strict-calls      main page answers 503 when a call fails (default 200)\n"
    "  --no-propagate      calls do not carry the trace headers nor x-request-id (an app\n"
    "                      that breaks traces, for the proxies' detector)\n"
    "  --concurrency N     connections served at once, a thread each (1024)\n"
    "  --log               one line per request on stdout\n"
    "  --quiet             no request lines (the default)\n"
    "\n"
    "endpoints: /healthz, /status/CODE, /headers, /hello, /echo, /delay/MS; any other\n"
    "path (/, /productpage, /details/0 ...) is the main page: the calls, as JSON.\n";

enum {
    OPT_NAME = 256, OPT_VERSION, OPT_LISTEN, OPT_CALL, OPT_LATENCY, OPT_ERROR_RATE,
    OPT_STRICT, OPT_CONCURRENCY, OPT_LOG, OPT_QUIET, OPT_NO_PROPAGATE,
};

static const struct option options[] = {
    { "name", required_argument, NULL, OPT_NAME },
    { "version", required_argument, NULL, OPT_VERSION },
    { "listen", required_argument, NULL, OPT_LISTEN },
    { "call", required_argument, NULL, OPT_CALL },
    { "latency", required_argument, NULL, OPT_LATENCY },
    { "error-rate", required_argument, NULL, OPT_ERROR_RATE },
    { "strict-calls", no_argument, NULL, OPT_STRICT },
    { "no-propagate", no_argument, NULL, OPT_NO_PROPAGATE },
    { "concurrency", required_argument, NULL, OPT_CONCURRENCY },
    { "log", no_argument, NULL, OPT_LOG },
    { "quiet", no_argument, NULL, OPT_QUIET },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
};

int keel_cmd_sample_app(int argc, char **argv)
{
    struct keel_sample_app_options o;
    keel_sample_app_options_defaults(&o);
    o.calls = keel_calloc((size_t)argc, sizeof(*o.calls));
    int rc = 2, c;
    long long v;
    char *end;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (c) {
        case OPT_NAME: o.name = optarg; break;
        case OPT_VERSION: o.version = optarg; break;
        case OPT_LISTEN: o.listen = optarg; break;
        case OPT_CALL: o.calls[o.n_calls++] = optarg; break;
        case OPT_STRICT: o.strict_calls = true; break;
        case OPT_NO_PROPAGATE: o.no_propagate = true; break;
        case OPT_LOG: o.log = true; break;
        case OPT_QUIET: o.log = false; break;
        case OPT_LATENCY:
            if (keel_cli_number("sample-app", "latency", optarg, 0, 3600000, &v) < 0)
                goto out;
            o.latency_ms = v;
            break;
        case OPT_CONCURRENCY:
            if (keel_cli_number("sample-app", "concurrency", optarg, 1, 100000, &v) < 0)
                goto out;
            o.concurrency = (int)v;
            break;
        case OPT_ERROR_RATE:
            o.error_rate = strtod(optarg, &end);
            if (*optarg == '\0' || *end != '\0' || !(o.error_rate >= 0 && o.error_rate <= 1)) {
                fprintf(stderr, "keel sample-app: --error-rate: '%s' is not a number in 0..1\n",
                        optarg);
                goto out;
            }
            break;
        case 'h':
            fputs(usage_text, stdout);
            rc = 0;
            goto out;
        default:
            fputs(usage_text, stderr);
            goto out;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "keel sample-app: unexpected argument '%s'\n", argv[optind]);
        goto out;
    }
    rc = keel_sample_app_run(&o);
out:
    free(o.calls);
    return rc;
}
