/* Kubernetes manifests -> what the local mesh runs. Every document is parsed with the
 * config loader's positioned YAML tree, so a bad Deployment is reported as
 * FILE:LINE:COL like any Istio resource. Documents keel's proxies read (Services,
 * Namespaces, Istio kinds) are kept byte for byte for the config dir; ServiceAccounts and
 * Deployments are blanked there (nothing for a proxy in them), keeping line numbers. */
#include "mesh/mesh.h"

#include "config/config_int.h"
#include "core/alloc.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define GROW(arr, n) ((arr) = keel_realloc((arr), ((n) + 1) * sizeof(*(arr))), &(arr)[(n)++])

static char *dup_s(const char *s)
{
    return keel_strdup(s ? s : "");
}

static const char *scalar(const struct keel_ynode *map, const char *key)
{
    const struct keel_ynode *n = keel_ynode_get(map, key);
    return n && n->type == KEEL_YNODE_SCALAR ? n->str : NULL;
}

static const struct keel_ynode *child(const struct keel_ynode *map, const char *key,
                                      enum keel_ynode_type t)
{
    const struct keel_ynode *n = keel_ynode_get(map, key);
    return n && n->type == t ? n : NULL;
}

static char *where(const struct keel_ynode *n)
{
    char buf[4200];
    snprintf(buf, sizeof(buf), "%s:%d:%d", n->file, n->line, n->col);
    return keel_strdup(buf);
}

static void read_kv(const struct keel_ynode *map, struct keel_mesh_kv **out, size_t *n)
{
    if (map == NULL || map->type != KEEL_YNODE_MAP)
        return;
    for (size_t i = 0; i < map->n; i++) {
        const struct keel_ynode *k = map->kids[2 * i], *v = map->kids[2 * i + 1];
        if (v->type != KEEL_YNODE_SCALAR)
            continue;
        struct keel_mesh_kv *kv = GROW(*out, *n);
        kv->key = dup_s(k->str);
        kv->value = dup_s(v->str);
    }
}

static void add_argv(struct keel_mesh_deploy *d, const char *s)
{
    d->argv = keel_realloc(d->argv, (d->argc + 2) * sizeof(char *));
    d->argv[d->argc++] = dup_s(s);
    d->argv[d->argc] = NULL;
}

static int read_strings(struct keel_mesh_deploy *d, const struct keel_ynode *seq, const char *what,
                        struct keel_diag *diag)
{
    if (seq == NULL)
        return 0;
    if (seq->type != KEEL_YNODE_SEQ) {
        keel_diag_error(diag, seq->file, seq->line, seq->col,
                        "container %s: expected a list of strings, got %s", what,
                        keel_ynode_type_name(seq));
        return -1;
    }
    for (size_t i = 0; i < seq->n; i++) {
        const struct keel_ynode *s = seq->kids[i];
        if (s->type != KEEL_YNODE_SCALAR) {
            keel_diag_error(diag, s->file, s->line, s->col,
                            "container %s: expected a string, got %s", what,
                            keel_ynode_type_name(s));
            return -1;
        }
        add_argv(d, s->str);
    }
    return 0;
}

static void deploy_free(struct keel_mesh_deploy *d)
{
    free(d->name);
    free(d->ns);
    free(d->service_account);
    free(d->where);
    for (size_t i = 0; i < d->n_labels; i++) {
        free(d->labels[i].key);
        free(d->labels[i].value);
    }
    free(d->labels);
    for (size_t i = 0; i < d->argc; i++)
        free(d->argv[i]);
    free(d->argv);
    for (size_t i = 0; i < d->n_env; i++) {
        free(d->env[i].key);
        free(d->env[i].value);
    }
    free(d->env);
}

static int read_deployment(struct keel_mesh_manifest *m, const struct keel_ynode *doc,
                           const char *name, const char *ns, struct keel_diag *diag)
{
    struct keel_mesh_deploy d = {.replicas = 1};
    d.name = dup_s(name);
    d.ns = dup_s(ns);
    d.where = where(doc);
    const struct keel_ynode *spec = child(doc, "spec", KEEL_YNODE_MAP);
    if (spec == NULL) {
        keel_diag_error(diag, doc->file, doc->line, doc->col, "Deployment %s: missing spec", name);
        goto bad;
    }
    const struct keel_ynode *rep = keel_ynode_get(spec, "replicas");
    if (rep) {
        char *end;
        long r = rep->type == KEEL_YNODE_SCALAR ? strtol(rep->str, &end, 10) : -1;
        if (rep->type != KEEL_YNODE_SCALAR || *end || r < 0 || r > 64) {
            keel_diag_error(diag, rep->file, rep->line, rep->col,
                            "Deployment %s: replicas must be an integer in 0..64", name);
            goto bad;
        }
        d.replicas = (int)r;
    }
    const struct keel_ynode *tmpl = child(spec, "template", KEEL_YNODE_MAP);
    const struct keel_ynode *pspec = child(tmpl, "spec", KEEL_YNODE_MAP);
    if (pspec == NULL) {
        const struct keel_ynode *at = tmpl ? tmpl : spec;
        keel_diag_error(diag, at->file, at->line, at->col,
                        "Deployment %s: missing spec.template.spec", name);
        goto bad;
    }
    read_kv(keel_ynode_get(keel_ynode_get(tmpl, "metadata"), "labels"), &d.labels, &d.n_labels);
    const char *sa = scalar(pspec, "serviceAccountName");
    d.service_account = dup_s(sa ? sa : scalar(pspec, "serviceAccount"));
    const struct keel_ynode *cs = child(pspec, "containers", KEEL_YNODE_SEQ);
    const struct keel_ynode *c = cs && cs->n ? cs->kids[0] : NULL;
    if (c == NULL || c->type != KEEL_YNODE_MAP) {
        keel_diag_error(diag, pspec->file, pspec->line, pspec->col, "Deployment %s: no containers",
                        name);
        goto bad;
    }
    if (read_strings(&d, keel_ynode_get(c, "command"), "command", diag) < 0 ||
        read_strings(&d, keel_ynode_get(c, "args"), "args", diag) < 0)
        goto bad;
    if (d.argc == 0) {
        keel_diag_error(diag, c->file, c->line, c->col,
                        "Deployment %s: container has no command (keel mesh runs the container's "
                        "command/args as a local process; an image alone cannot run)",
                        name);
        goto bad;
    }
    const struct keel_ynode *env = keel_ynode_get(c, "env");
    for (size_t i = 0; env && env->type == KEEL_YNODE_SEQ && i < env->n; i++) {
        const struct keel_ynode *e = env->kids[i];
        const char *en = scalar(e, "name"), *ev = scalar(e, "value");
        if (en == NULL) {
            keel_diag_error(diag, e->file, e->line, e->col,
                            "Deployment %s: env entry without a name", name);
            goto bad;
        }
        if (ev == NULL) {
            keel_diag_warn(diag, e->file, e->line, e->col,
                           "Deployment %s: env %s has no literal value, ignored", name, en);
            continue;
        }
        struct keel_mesh_kv *kv = GROW(d.env, d.n_env);
        kv->key = dup_s(en);
        kv->value = dup_s(ev);
    }
    for (size_t i = 0; i < m->n_deploys; i++)
        if (!strcmp(m->deploys[i].name, d.name) && !strcmp(m->deploys[i].ns, d.ns)) {
            keel_diag_error(diag, doc->file, doc->line, doc->col,
                            "Deployment %s.%s defined twice (first at %s)", name, ns,
                            m->deploys[i].where);
            goto bad;
        }
    *GROW(m->deploys, m->n_deploys) = d;
    return 0;
bad:
    deploy_free(&d);
    return -1;
}

static void read_service(struct keel_mesh_manifest *m, const struct keel_ynode *doc,
                         const char *name, const char *ns)
{
    struct keel_mesh_service *s = GROW(m->services, m->n_services);
    memset(s, 0, sizeof(*s));
    s->name = dup_s(name);
    s->ns = dup_s(ns);
    const struct keel_ynode *spec = keel_ynode_get(doc, "spec");
    read_kv(keel_ynode_get(spec, "selector"), &s->selector, &s->n_selector);
    const struct keel_ynode *ports = child(spec, "ports", KEEL_YNODE_SEQ);
    for (size_t i = 0; ports && i < ports->n; i++) {
        const char *pn = scalar(ports->kids[i], "name"), *pp = scalar(ports->kids[i], "port");
        struct keel_mesh_service_port *p = GROW(s->ports, s->n_ports);
        p->name = dup_s(pn ? pn : "");
        p->port = pp ? atoi(pp) : 0;
    }
}

/* One document: 1 when the config dir keeps it, 0 when it is blanked, -1 on error. */
static int read_doc(struct keel_mesh_manifest *m, const struct keel_ynode *doc,
                    struct keel_diag *diag)
{
    if (doc == NULL || doc->type != KEEL_YNODE_MAP)
        return 1; /* the loader says what is wrong with it */
    const char *kind = scalar(doc, "kind"), *api = scalar(doc, "apiVersion");
    const struct keel_ynode *md = keel_ynode_get(doc, "metadata");
    const char *name = scalar(md, "name"), *ns = scalar(md, "namespace");
    if (kind == NULL || api == NULL)
        return 1;
    if (ns == NULL || !*ns)
        ns = "default";
    bool core = !strcmp(api, "v1"), apps = !strcmp(api, "apps/v1");
    if ((core && (!strcmp(kind, "Namespace") || !strcmp(kind, "ServiceAccount"))) ||
        (apps && !strcmp(kind, "Deployment"))) {
        if (name == NULL) {
            const struct keel_ynode *at = md ? md : doc;
            keel_diag_error(diag, at->file, at->line, at->col, "%s without metadata.name", kind);
            return -1;
        }
        if (!strcmp(kind, "Deployment"))
            return read_deployment(m, doc, name, ns, diag) < 0 ? -1 : 0;
        if (!strcmp(kind, "Namespace")) {
            const char *wp = scalar(keel_ynode_get(md, "labels"), "istio.io/use-waypoint");
            if (wp && *wp) {
                struct keel_mesh_ambient_ns *a = GROW(m->ambient, m->n_ambient);
                a->ns = dup_s(name);
                a->waypoint = dup_s(wp);
            }
            return 1; /* the sidecars read its use-waypoint label too */
        }
        return 0;
    }
    if (core && !strcmp(kind, "Service") && name)
        read_service(m, doc, name, ns);
    if (core && !strcmp(kind, "ConfigMap") && name && !strcmp(name, "istio") && !m->mixer_report_server) {
        /* mesh config: the mixer keel mesh up runs (its own YAML text; one key read here) */
        const char *mesh = scalar(keel_ynode_get(doc, "data"), "mesh");
        const char *k = mesh ? strstr(mesh, "mixerReportServer:") : NULL;
        if (k) {
            k += strlen("mixerReportServer:");
            k += strspn(k, " \t\"'");
            size_t n = strcspn(k, " \t\r\n\"'#");
            if (n > 0)
            {
                char tmp[256];
                snprintf(tmp, sizeof(tmp), "%.*s", (int)n, k);
                m->mixer_report_server = dup_s(tmp);
            }
        }
    }
    if (!strcmp(kind, "Gateway") && name) {
        const struct keel_ynode *spec = keel_ynode_get(doc, "spec");
        if (!strncmp(api, "networking.istio.io/", 20)) {
            const char *sel = scalar(keel_ynode_get(spec, "selector"), "istio");
            if (sel && !strcmp(sel, "ingressgateway"))
                m->has_ingress = true;
        } else if (!strncmp(api, "gateway.networking.k8s.io/", 26)) {
            const char *cls = scalar(spec, "gatewayClassName");
            if (cls && !strcmp(cls, "istio-waypoint")) {
                struct keel_mesh_waypoint *w = GROW(m->waypoints, m->n_waypoints);
                w->name = dup_s(name);
                w->ns = dup_s(ns);
            }
        }
    }
    return 1;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 8192, n = 0, r;
    char *buf = keel_alloc(cap);
    while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (n + 1 == cap)
            buf = keel_realloc(buf, cap *= 2);
    }
    bool err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int read_file(struct keel_mesh_manifest *m, const char *path, struct keel_diag *diag)
{
    size_t len;
    char *text = slurp(path, &len);
    if (text == NULL) {
        keel_diag_error(diag, path, 0, 0, "cannot read: %s", strerror(errno));
        return -1;
    }
    struct keel_config_doc *docs;
    size_t nd = keel_config_split_documents(text, len, &docs);
    struct keel_config_arena a = {0};
    int rc = 0;
    bool keep_any = false;
    for (size_t i = 0; i < nd; i++) {
        int line_off = 0;
        for (size_t j = 0; j < docs[i].off; j++)
            line_off += text[j] == '\n';
        struct keel_ynode **roots;
        int n =
            keel_yaml_parse(&a, path, text + docs[i].off, docs[i].len, line_off, 0, &roots, diag);
        if (n < 0) {
            rc = -1;
            continue;
        }
        bool keep = false;
        for (int k = 0; k < n; k++) {
            int r = read_doc(m, roots[k], diag);
            if (r < 0)
                rc = -1;
            else if (r > 0 && roots[k] != NULL)
                keep = true;
        }
        if (!keep) /* blank it, newlines kept so that the loader's lines match the user's */
            for (size_t j = docs[i].off; j < docs[i].off + docs[i].len; j++)
                if (text[j] != '\n')
                    text[j] = ' ';
        keep_any |= keep;
    }
    keel_config_arena_free(&a);
    free(docs);
    struct keel_mesh_file *f = GROW(m->files, m->n_files);
    f->path = keel_strdup(path);
    f->text = text;
    f->len = len;
    f->has_resources = keep_any;
    return rc;
}

static bool yaml_name(const char *s)
{
    size_t n = strlen(s);
    return s[0] != '.' &&
           ((n > 5 && !strcmp(s + n - 5, ".yaml")) || (n > 4 && !strcmp(s + n - 4, ".yml")));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int read_path(struct keel_mesh_manifest *m, const char *path, int depth,
                     struct keel_diag *diag)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        keel_diag_error(diag, path, 0, 0, "cannot read: %s", strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return read_file(m, path, diag);
    DIR *d = opendir(path);
    if (d == NULL) {
        keel_diag_error(diag, path, 0, 0, "cannot read directory: %s", strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        size_t l = strlen(path) + strlen(e->d_name) + 2;
        char *full = keel_alloc(l);
        snprintf(full, l, "%s/%s", path, e->d_name);
        struct stat es;
        /* like kubectl apply -f DIR: the dir's own files, not its subdirectories */
        bool dir = stat(full, &es) == 0 && S_ISDIR(es.st_mode);
        if (!dir && yaml_name(e->d_name))
            *GROW(names, n) = full;
        else
            free(full);
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof(*names), cmp_str);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (read_path(m, names[i], depth + 1, diag) < 0)
            rc = -1;
        free(names[i]);
    }
    free(names);
    return rc;
}

int keel_mesh_manifest_read(struct keel_mesh_manifest *m, const char *const *paths, size_t n,
                            struct keel_diag *diag)
{
    memset(m, 0, sizeof(*m));
    int rc = 0;
    for (size_t i = 0; i < n; i++)
        if (read_path(m, paths[i], 0, diag) < 0)
            rc = -1;
    if (rc == 0 && m->n_deploys == 0) {
        keel_diag_error(diag, n ? paths[0] : "-", 0, 0, "no Deployment found: nothing to run");
        rc = -1;
    }
    /* the resources keel's proxies read must load as they will in the config dir */
    if (rc == 0) {
        struct keel_config_source *src = keel_calloc(m->n_files + 1, sizeof(*src));
        for (size_t i = 0; i < m->n_files; i++)
            src[i] =
                (struct keel_config_source){m->files[i].path, m->files[i].text, m->files[i].len};
        /* quiet unless it fails: its warnings may be about what mesh up adds itself (a
         * waypoint's WorkloadEntry); the config dir's load says the real ones */
        struct keel_diag quiet;
        keel_diag_init(&quiet);
        struct keel_config *cfg = keel_config_load_sources(src, m->n_files, &quiet);
        keel_diag_fini(&quiet);
        if (cfg == NULL)
            cfg = keel_config_load_sources(src, m->n_files, diag);
        free(src);
        if (cfg == NULL)
            rc = -1;
        else
            keel_config_unref(cfg);
    }
    return rc;
}

const char *keel_mesh_ambient_waypoint(const struct keel_mesh_manifest *m, const char *ns)
{
    for (size_t i = 0; i < m->n_ambient; i++)
        if (!strcmp(m->ambient[i].ns, ns))
            return m->ambient[i].waypoint;
    return NULL;
}

static void kv_free(struct keel_mesh_kv *kv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(kv[i].key);
        free(kv[i].value);
    }
    free(kv);
}

void keel_mesh_manifest_free(struct keel_mesh_manifest *m)
{
    free(m->mixer_report_server);
    for (size_t i = 0; i < m->n_services; i++) {
        struct keel_mesh_service *s = &m->services[i];
        free(s->name);
        free(s->ns);
        for (size_t j = 0; j < s->n_ports; j++)
            free(s->ports[j].name);
        free(s->ports);
        kv_free(s->selector, s->n_selector);
    }
    free(m->services);
    for (size_t i = 0; i < m->n_deploys; i++)
        deploy_free(&m->deploys[i]);
    free(m->deploys);
    for (size_t i = 0; i < m->n_waypoints; i++) {
        free(m->waypoints[i].name);
        free(m->waypoints[i].ns);
    }
    free(m->waypoints);
    for (size_t i = 0; i < m->n_ambient; i++) {
        free(m->ambient[i].ns);
        free(m->ambient[i].waypoint);
    }
    free(m->ambient);
    for (size_t i = 0; i < m->n_files; i++) {
        free(m->files[i].path);
        free(m->files[i].text);
    }
    free(m->files);
    memset(m, 0, sizeof(*m));
}
