/* Proxies in mixer mode: mesh config mixerReportServer names a keel mixer (or Istio's
 * Mixer); each worker ships its report bags there with its own client (src/mixer/
 * client.c) instead of (MIXER) or besides (BOTH) running the Mixer rules itself. The
 * standard metrics and access logs stay local in every mode. */
#include "proxy/proxy_int.h"

#include <string.h>

static bool named(const struct keel_config *cfg)
{
    return cfg->mesh.mixer_report_server != NULL && cfg->mesh.mixer_report_server[0] != '\0';
}

bool proxy_reports_to_mixer(const struct keel_proxy_options *o, const struct keel_config *cfg)
{
    return o->report_mode != KEEL_REPORT_LOCAL && named(cfg);
}

bool proxy_runs_rules(const struct keel_proxy_options *o, const struct keel_config *cfg)
{
    return !proxy_reports_to_mixer(o, cfg) || o->report_mode == KEEL_REPORT_BOTH;
}

void worker_mixer_report(struct worker *w, const struct keel_config *cfg, const struct keel_attr_bag *bag)
{
    const char *target = cfg->mesh.mixer_report_server;
    if (w->mixer != NULL && strcmp(keel_mixer_client_target(w->mixer), target) != 0) {
        keel_mixer_client_free(w->mixer); /* a reload named another mixer */
        w->mixer = NULL;
    }
    if (w->mixer == NULL) /* first report on this worker's loop */
        w->mixer = keel_mixer_client_new(w->loop, target, &w->mixer_stats);
    keel_mixer_client_report(w->mixer, bag);
}
