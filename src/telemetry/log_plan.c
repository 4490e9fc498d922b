/* The Telemetry API's access logging for one proxy (telemetry-api.md §3): which
 * providers log, on which reporter side, behind which filter. The resources in scope are
 * merged as Istio merges them: mesh defaultProviders.accessLogging first (both sides, no
 * filter), then root namespace, namespace, workload; each accessLogging entry sets, for
 * each of its providers (its own, else the default ones) and each side its match.mode
 * names, whether that provider logs (disabled) and its filter. */
#include "telemetry/engine_int.h"

#include "core/json.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

struct prov_state {
    const char *name;
    bool on[2];                      /* [client, server] */
    const struct keel_expr *filter[2];
};

static struct prov_state *prov(struct prov_state *st, size_t *n, const char *name)
{
    for (size_t i = 0; i < *n; i++)
        if (!strcmp(st[i].name, name))
            return &st[i];
    if (*n == KEEL_TELEMETRY_MAX_LOGS / 2)
        return NULL;
    st[*n] = (struct prov_state){ .name = name };
    return &st[(*n)++];
}

/* A provider name as a destination: Istio's built-in "envoy" (the mesh's accessLogFile
 * settings, /dev/stdout by default) or an extensionProviders envoyFileAccessLog. */
static bool resolve(const struct keel_config *cfg, const char *name, struct keel_telemetry_log *l,
                    const struct keel_config_ext_provider **labels_of, struct keel_diag *d)
{
    const struct keel_config_mesh *m = &cfg->mesh;
    for (size_t i = 0; i < m->n_extension_providers; i++) {
        const struct keel_config_ext_provider *p = &m->extension_providers[i];
        if (!p->name || strcmp(p->name, name))
            continue;
        if (p->type != KEEL_CONFIG_PROVIDER_FILE_LOG) {
            if (d)
                keel_diag_warn(d, p->pos.file, p->pos.line, p->pos.col,
                               "provider \"%s\" is not an envoyFileAccessLog; no access log is written for it", name);
            return false;
        }
        l->path = p->log_path && *p->log_path ? p->log_path : "/dev/stdout";
        if (p->has_log_format_labels) {
            l->encoding = KEEL_ACCESSLOG_JSON;
            l->format = NULL; /* labels: {} -> Istio's default JSON keys */
            if (p->n_log_format_labels > 0)
                *labels_of = p; /* built into JSON by the caller */
        } else {
            l->encoding = KEEL_ACCESSLOG_TEXT;
            l->format = p->log_format_text && *p->log_format_text ? p->log_format_text : NULL;
        }
        return true;
    }
    if (!strcmp(name, "envoy")) {
        l->path = m->access_log_file && *m->access_log_file ? m->access_log_file : "/dev/stdout";
        l->encoding = m->access_log_encoding == KEEL_CONFIG_LOG_JSON ? KEEL_ACCESSLOG_JSON : KEEL_ACCESSLOG_TEXT;
        l->format = m->access_log_format && *m->access_log_format ? m->access_log_format : NULL;
        return true;
    }
    if (d && strcasecmp(name, "prometheus"))
        keel_diag_warn(d, m->pos.file, m->pos.line, m->pos.col,
                       "access logging provider \"%s\" is not defined (envoy, or an envoyFileAccessLog in "
                       "extensionProviders); nothing is logged for it", name);
    return false;
}

size_t keel_telemetry_access_logs(const struct keel_config *cfg, const struct keel_telemetry_workload *self,
                                  struct keel_telemetry_log *out, bool *configured, struct keel_buf *json,
                                  struct keel_diag *d)
{
    struct prov_state st[KEEL_TELEMETRY_MAX_LOGS / 2];
    size_t n_st = 0;
    const struct keel_config_mesh *m = &cfg->mesh;
    *configured = m->n_default_access_logging_providers > 0;
    for (size_t i = 0; i < m->n_default_access_logging_providers; i++) {
        struct prov_state *p = prov(st, &n_st, m->default_access_logging_providers[i]);
        if (p)
            p->on[0] = p->on[1] = true;
    }
    const struct keel_config_telemetry *scope[64];
    size_t n_scope = keel_telemetry_scope(cfg, self, scope, 64);
    for (size_t i = 0; i < n_scope; i++)
        for (size_t j = 0; j < scope[i]->n_access_logging; j++) {
            const struct keel_config_telemetry_logging *e = &scope[i]->access_logging[j];
            *configured = true;
            bool sides[2] = { e->mode != KEEL_CONFIG_MODE_SERVER, e->mode != KEEL_CONFIG_MODE_CLIENT };
            const struct keel_expr *f = e->filter.src && *e->filter.src ? e->filter.compiled : NULL;
            size_t np = e->n_providers ? e->n_providers : m->n_default_access_logging_providers;
            if (np == 0 && d && e->disabled != 1)
                keel_diag_warn(d, e->pos.file, e->pos.line, e->pos.col,
                               "accessLogging names no provider and the mesh has no "
                               "defaultProviders.accessLogging: nothing is logged");
            for (size_t k = 0; k < np; k++) {
                const char *name = e->n_providers ? e->providers[k].name : m->default_access_logging_providers[k];
                struct prov_state *p = name ? prov(st, &n_st, name) : NULL;
                if (!p)
                    continue;
                for (int s = 0; s < 2; s++)
                    if (sides[s]) {
                        p->on[s] = e->disabled != 1;
                        p->filter[s] = f;
                    }
            }
        }
    size_t n = 0, json_off[KEEL_TELEMETRY_MAX_LOGS];
    for (size_t i = 0; i < n_st; i++) {
        struct keel_telemetry_log l = { .provider = st[i].name };
        const struct keel_config_ext_provider *labels_of = NULL;
        if ((!st[i].on[0] && !st[i].on[1]) || !resolve(cfg, st[i].name, &l, &labels_of, d))
            continue;
        size_t off = SIZE_MAX;
        if (labels_of != NULL) { /* the JSON object keel's compiler takes: {"key": "format"} */
            off = keel_buf_len(json);
            keel_buf_append(json, "{", 1);
            for (size_t k = 0; k < labels_of->n_log_format_labels; k++) {
                if (k)
                    keel_buf_append(json, ",", 1);
                keel_json_str(json, labels_of->log_format_labels[k].key);
                keel_buf_append(json, ":", 1);
                keel_json_str(json, labels_of->log_format_labels[k].value);
            }
            keel_buf_append(json, "}", 2); /* with its NUL */
        }
        for (int s = 0; s < 2; s++)
            if (st[i].on[s]) {
                out[n] = l;
                out[n].client = s == 0;
                out[n].filter = st[i].filter[s];
                json_off[n++] = off;
            }
    }
    /* json has stopped growing: offsets become pointers */
    for (size_t i = 0; i < n; i++)
        if (json_off[i] != SIZE_MAX)
            out[i].format = json->data + json_off[i];
    return n;
}
