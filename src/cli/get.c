/* keel get KIND [-n NAMESPACE] [--config-dir DIR]: a kubectl-like table of what a config
 * dir defines. Services show their ports with the resolved protocol. */
#include "cli/commands.h"

#include "config/config.h"
#include "core/alloc.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define COLS 5

struct table {
    char *(*cells)[COLS];
    size_t n, cap;
    int ncols;
};

static void row(struct table *t, const char *a, const char *b, const char *c, const char *d, const char *e)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 16;
        t->cells = keel_realloc(t->cells, t->cap * sizeof(*t->cells));
    }
    const char *v[COLS] = { a, b, c, d, e };
    for (int i = 0; i < COLS; i++)
        t->cells[t->n][i] = keel_strdup(v[i] ? v[i] : "");
    t->n++;
}

static void print_table(struct table *t)
{
    size_t w[COLS] = { 0 };
    for (size_t r = 0; r < t->n; r++)
        for (int i = 0; i < t->ncols; i++)
            if (strlen(t->cells[r][i]) > w[i])
                w[i] = strlen(t->cells[r][i]);
    for (size_t r = 0; r < t->n; r++) {
        for (int i = 0; i < t->ncols; i++) {
            if (i + 1 < t->ncols)
                printf("%-*s   ", (int)w[i], t->cells[r][i]);
            else
                printf("%s", t->cells[r][i]);
        }
        printf("\n");
        for (int i = 0; i < COLS; i++)
            free(t->cells[r][i]);
    }
    free(t->cells);
}

/* which kinds a KIND argument selects: by name (any case), plural, or short name */
static bool selects(const char *arg, const struct keel_config_object *o)
{
    static const struct { const char *alias, *kind; } aliases[] = {
        { "svc", "Service" }, { "se", "ServiceEntry" }, { "we", "WorkloadEntry" }, { "cm", "ConfigMap" },
        { "gtw", "Gateway" }, { "telemetries", "Telemetry" }, { "mesh", "ConfigMap" }, { "wasmplugins", "WasmPlugin" },
    };
    if (!strcasecmp(arg, "all"))
        return true;
    char a[128];
    snprintf(a, sizeof(a), "%s", arg);
    for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++)
        if (!strcasecmp(a, aliases[i].alias))
            snprintf(a, sizeof(a), "%s", aliases[i].kind);
    const char *names[2] = { o->kind_written, keel_config_kind_name(o->kind) };
    for (int k = 0; k < 2; k++) {
        size_t n = strlen(names[k]), al = strlen(a);
        if (!strcasecmp(a, names[k]))
            return true;
        if (al == n + 1 && !strncasecmp(a, names[k], n) && (a[n] == 's' || a[n] == 'S'))
            return true;
        if (al == n + 2 && !strncasecmp(a, names[k], n) && !strcasecmp(a + n, "es"))
            return true;
    }
    return false;
}

static void ports_of(const struct keel_config *cfg, const struct keel_config_object *o, char *buf, size_t cap)
{
    buf[0] = '\0';
    size_t used = 0;
    for (size_t i = 0; i < cfg->n_services; i++) {
        const struct keel_registry_service *s = &cfg->services[i];
        if (s->source != o)
            continue;
        for (size_t j = 0; j < s->n_ports && used < cap; j++) {
            const struct keel_registry_port *p = &s->ports[j];
            char tp[64];
            if (p->target_port_name)
                snprintf(tp, sizeof(tp), "%s", p->target_port_name);
            else
                snprintf(tp, sizeof(tp), "%d", p->target_port ? p->target_port : p->port);
            used += (size_t)snprintf(buf + used, cap - used, "%s%s%s%d->%s/%s", used ? "," : "", p->name,
                                     p->name[0] ? ":" : "", p->port, tp, keel_proto_name(p->protocol));
        }
        if (o->kind == KEEL_CONFIG_SERVICE)
            break; /* a ServiceEntry has one registry service per host, same ports */
    }
    if (buf[0] == '\0')
        snprintf(buf, cap, "<none>");
}

int keel_cmd_get(int argc, char **argv)
{
    const char *kind = NULL, *ns = NULL, *dir = "keel.d";
    bool all_ns = false;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-n") || !strcmp(argv[i], "--namespace")) && i + 1 < argc)
            ns = argv[++i];
        else if (!strcmp(argv[i], "-A") || !strcmp(argv[i], "--all-namespaces"))
            all_ns = true;
        else if (!strcmp(argv[i], "--config-dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strncmp(argv[i], "--config-dir=", 13))
            dir = argv[i] + 13;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
            kind = NULL, i = argc;
        else if (kind == NULL && argv[i][0] != '-')
            kind = argv[i];
        else
            kind = NULL, i = argc;
    }
    if (kind == NULL) {
        fprintf(stderr, "usage: keel get KIND [-n NAMESPACE | -A] [--config-dir DIR]\n\n"
                        "KIND: all, metric, logentry, instance, prometheus, stdio, handler, rule, Telemetry,\n"
                        "WasmPlugin, Service (svc), ServiceEntry (se), WorkloadEntry (we), Gateway, ConfigMap,\n"
                        "attributemanifest; plurals accepted. Without -n every namespace is listed.\n");
        return 2;
    }
    (void)all_ns;
    struct keel_diag d;
    keel_diag_init(&d);
    const char *paths[1] = { dir };
    struct keel_config *cfg = keel_config_load_paths(paths, 1, &d);
    if (cfg == NULL) {
        for (size_t i = 0; i < d.n; i++)
            fprintf(stderr, "%s\n", d.msgs[i]);
        keel_diag_fini(&d);
        return 1;
    }
    keel_diag_fini(&d);
    struct table t = { 0 };
    bool wide_kind = !strcasecmp(kind, "all");
    t.ncols = 4;
    row(&t, "NAMESPACE", "NAME", wide_kind ? "KIND" : "APIVERSION", "DETAILS", NULL);
    size_t found = 0;
    for (int k = 0; k < KEEL_CONFIG_KIND_COUNT; k++)
        for (const struct keel_config_object *o = cfg->first[k]; o; o = o->next) {
            if (!selects(kind, o) || (ns && strcmp(ns, o->namespace)))
                continue;
            char det[1024] = "";
            switch (o->kind) {
            case KEEL_CONFIG_SERVICE:
                ports_of(cfg, o, det, sizeof(det));
                break;
            case KEEL_CONFIG_SERVICEENTRY: {
                const struct keel_config_serviceentry *se = (const void *)o;
                size_t u = 0;
                for (size_t i = 0; i < se->n_hosts && u < sizeof(det); i++)
                    u += (size_t)snprintf(det + u, sizeof(det) - u, "%s%s", i ? "," : "hosts=", se->hosts[i].s);
                if (u < sizeof(det) - 2) {
                    det[u++] = ' ';
                    ports_of(cfg, o, det + u, sizeof(det) - u);
                }
                break;
            }
            case KEEL_CONFIG_WORKLOADENTRY: {
                const struct keel_config_workloadentry *we = (const void *)o;
                size_t u = (size_t)snprintf(det, sizeof(det), "address=%s", we->spec.address ? we->spec.address : "");
                for (size_t i = 0; i < we->spec.n_labels && u < sizeof(det); i++)
                    u += (size_t)snprintf(det + u, sizeof(det) - u, "%s%s=%s", i ? "," : " labels=",
                                          we->spec.labels[i].key, we->spec.labels[i].value);
                break;
            }
            case KEEL_CONFIG_RULE: {
                const struct keel_config_rule *r = (const void *)o;
                snprintf(det, sizeof(det), "match=%s actions=%zu",
                         r->match.src && r->match.src[0] ? r->match.src : "true", r->n_actions);
                break;
            }
            case KEEL_CONFIG_METRIC:
                snprintf(det, sizeof(det), "dimensions=%zu", ((const struct keel_config_metric *)o)->n_dimensions);
                break;
            case KEEL_CONFIG_LOGENTRY:
                snprintf(det, sizeof(det), "variables=%zu", ((const struct keel_config_logentry *)o)->n_variables);
                break;
            case KEEL_CONFIG_PROMETHEUS:
                snprintf(det, sizeof(det), "metrics=%zu", ((const struct keel_config_prometheus *)o)->n_metrics);
                break;
            case KEEL_CONFIG_GATEWAY:
                snprintf(det, sizeof(det), "class=%s", ((const struct keel_config_gateway *)o)->gateway_class_name);
                break;
            case KEEL_CONFIG_WASMPLUGIN:
                snprintf(det, sizeof(det), "%s",
                         ((const struct keel_config_wasmplugin *)o)->is_attributegen ? "attributegen" : "unsupported");
                break;
            default:
                break;
            }
            row(&t, o->namespace, o->name, wide_kind ? o->kind_written : o->api_version, det, NULL);
            found++;
        }
    if (found == 0) {
        for (size_t r = 0; r < t.n; r++)
            for (int i = 0; i < COLS; i++)
                free(t.cells[r][i]);
        free(t.cells);
        if (ns)
            fprintf(stderr, "No resources found in %s namespace.\n", ns);
        else
            fprintf(stderr, "No resources found.\n");
    } else {
        print_table(&t);
    }
    keel_config_unref(cfg);
    return 0;
}
