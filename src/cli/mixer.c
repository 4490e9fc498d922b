/* keel mixer: Mixer's Report API in front of the telemetry engine (src/mixer/). */
#include "cli/commands.h"

#include "core/log.h"
#include "mixer/mixer.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: keel mixer [OPTIONS]\n"
    "\n"
    "  --listen ADDR         gRPC istio.mixer.v1.Mixer/Report, h2c (127.0.0.1:9091)\n"
    "  --prometheus ADDR     /metrics of the prometheus handlers (127.0.0.1:42422)\n"
    "  --monitoring ADDR     /ready and the mixer's own /metrics (127.0.0.1:15014)\n"
    "  --config-dir DIR      Mixer config (rules, instances, handlers), watched and reloaded\n"
    "  --istio-defaults      add Istio 1.4's default telemetry config\n"
    "                        (examples/istio-mixer-defaults.yaml, compiled in)\n"
    "  --drain-timeout MS    on SIGTERM, time given to calls in flight (5000)\n"
    "  --log-level LEVEL     debug, info, warning, error (info)\n";

enum { OPT_LISTEN = 256, OPT_PROM, OPT_MON, OPT_CONFIG_DIR, OPT_DEFAULTS, OPT_DRAIN, OPT_LOG_LEVEL };

static const struct option options[] = {
    { "listen", required_argument, NULL, OPT_LISTEN },
    { "prometheus", required_argument, NULL, OPT_PROM },
    { "monitoring", required_argument, NULL, OPT_MON },
    { "config-dir", required_argument, NULL, OPT_CONFIG_DIR },
    { "istio-defaults", no_argument, NULL, OPT_DEFAULTS },
    { "drain-timeout", required_argument, NULL, OPT_DRAIN },
    { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
};

int keel_cmd_mixer(int argc, char **argv)
{
    struct keel_mixer_options o = {
        .listen = "127.0.0.1:9091",
        .prometheus = "127.0.0.1:42422",
        .monitoring = "127.0.0.1:15014",
        .drain_timeout_ms = 5000,
    };
    int c;
    char *end;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (c) {
        case OPT_LISTEN: o.listen = optarg; break;
        case OPT_PROM: o.prometheus = optarg; break;
        case OPT_MON: o.monitoring = optarg; break;
        case OPT_CONFIG_DIR: o.config_dir = optarg; break;
        case OPT_DEFAULTS: o.istio_defaults = true; break;
        case OPT_DRAIN:
            o.drain_timeout_ms = strtoll(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || o.drain_timeout_ms < 0) {
                fprintf(stderr, "keel mixer: --drain-timeout: '%s' is not a number >= 0\n", optarg);
                return 2;
            }
            break;
        case OPT_LOG_LEVEL:
            if (!strcmp(optarg, "debug")) keel_log_min = KEEL_LOG_DEBUG;
            else if (!strcmp(optarg, "info")) keel_log_min = KEEL_LOG_INFO;
            else if (!strcmp(optarg, "warning")) keel_log_min = KEEL_LOG_WARN;
            else if (!strcmp(optarg, "error")) keel_log_min = KEEL_LOG_ERROR;
            else {
                fprintf(stderr, "keel mixer: --log-level: debug, info, warning or error\n");
                return 2;
            }
            break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "keel mixer: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    return keel_mixer_run(&o);
}
