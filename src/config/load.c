/* Generations: read files, bind, model, registry; refcounting and reload. */
#include "config/config_int.h"

#include "core/alloc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEEL_CONFIG_FILE_MAX (16 << 20)

static _Atomic uint64_t generations;
static _Atomic uint64_t reload_failures;
static _Atomic uint64_t reload_successes;

static struct keel_config *config_new(void)
{
    struct keel_config *cfg = keel_calloc(1, sizeof(*cfg));
    atomic_init(&cfg->refs, 1);
    cfg->impl = keel_calloc(1, sizeof(*cfg->impl));
    keel_config_mesh_defaults(&cfg->mesh);
    return cfg;
}

static void config_free(struct keel_config *cfg)
{
    struct keel_config_impl *im = cfg->impl;
    for (size_t i = 0; i < im->n_exprs; i++)
        keel_config_expr_release(im->exprs[i]);
    free(im->exprs);
    keel_config_routing_fini(im);
    free(im->objs);
    keel_config_index_fini(&im->by_fqn);
    keel_config_index_fini(&im->by_identity);
    keel_config_index_fini(&im->services);
    keel_config_index_fini(&im->workloads);
    keel_config_arena_free(&im->arena);
    free(im);
    free(cfg);
}

struct keel_config *keel_config_ref(struct keel_config *cfg)
{
    if (cfg)
        atomic_fetch_add_explicit(&cfg->refs, 1, memory_order_relaxed);
    return cfg;
}

void keel_config_unref(struct keel_config *cfg)
{
    if (cfg && atomic_fetch_sub_explicit(&cfg->refs, 1, memory_order_acq_rel) == 1)
        config_free(cfg);
}

static void load_one(struct keel_config_ctx *c, const char *name, const char *data, size_t len)
{
    struct keel_ynode **docs;
    int nd = keel_yaml_parse(c->a, name, data, len, 0, 0, &docs, c->diag);
    if (nd < 0) {
        c->errors++;
        return;
    }
    for (int i = 0; i < nd; i++)
        keel_config_bind_document(c, docs[i]);
}

static struct keel_config *finish(struct keel_config_ctx *c)
{
    if (keel_config_model(c) == 0 && c->errors == 0) {
        keel_config_build_registry(c);
        keel_config_build_routing(c);
    }
    if (c->errors) {
        config_free(c->cfg);
        return NULL;
    }
    c->cfg->generation = atomic_fetch_add(&generations, 1) + 1;
    return c->cfg;
}

struct keel_config *keel_config_load_sources(const struct keel_config_source *src, size_t n, struct keel_diag *diags)
{
    struct keel_config *cfg = config_new();
    struct keel_config_ctx c = { .cfg = cfg, .a = &cfg->impl->arena, .diag = diags };
    for (size_t i = 0; i < n; i++)
        load_one(&c, keel_config_arena_strndup(c.a, src[i].name, strlen(src[i].name)), src[i].data, src[i].len);
    return finish(&c);
}

/* ---- files ---- */

struct file_list {
    char **paths;
    size_t n, cap;
    uint64_t fingerprint;
    int errors;
};

static void add_path(struct file_list *fl, char *p)
{
    if (fl->n == fl->cap) {
        fl->cap = fl->cap ? fl->cap * 2 : 16;
        fl->paths = keel_realloc(fl->paths, fl->cap * sizeof(*fl->paths));
    }
    fl->paths[fl->n++] = p;
}

static bool is_yaml_name(const char *s)
{
    size_t n = strlen(s);
    if (s[0] == '.')
        return false;
    return (n > 5 && !strcmp(s + n - 5, ".yaml")) || (n > 4 && !strcmp(s + n - 4, ".yml"));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void mix(uint64_t *h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        *h ^= s[i];
        *h *= 1099511628211ULL;
    }
}

static void collect(struct file_list *fl, const char *const *paths, size_t n, struct keel_diag *d)
{
    fl->fingerprint = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (stat(paths[i], &st) < 0) {
            keel_diag_error(d, paths[i], 0, 0, "cannot read: %s", strerror(errno));
            fl->errors++;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            add_path(fl, keel_strdup(paths[i]));
            continue;
        }
        DIR *dir = opendir(paths[i]);
        if (dir == NULL) {
            keel_diag_error(d, paths[i], 0, 0, "cannot read directory: %s", strerror(errno));
            fl->errors++;
            continue;
        }
        size_t first = fl->n;
        struct dirent *e;
        while ((e = readdir(dir)) != NULL) {
            if (!is_yaml_name(e->d_name))
                continue;
            size_t len = strlen(paths[i]);
            bool slash = len && paths[i][len - 1] == '/';
            char *p = keel_alloc(len + strlen(e->d_name) + 2);
            sprintf(p, "%s%s%s", paths[i], slash ? "" : "/", e->d_name);
            add_path(fl, p);
        }
        closedir(dir);
        qsort(fl->paths + first, fl->n - first, sizeof(char *), cmp_str);
    }
    for (size_t i = 0; i < fl->n; i++) {
        struct stat st;
        mix(&fl->fingerprint, fl->paths[i], strlen(fl->paths[i]) + 1);
        if (stat(fl->paths[i], &st) == 0) {
            mix(&fl->fingerprint, &st.st_size, sizeof(st.st_size));
            mix(&fl->fingerprint, &st.st_mtim, sizeof(st.st_mtim));
            mix(&fl->fingerprint, &st.st_ino, sizeof(st.st_ino));
        }
    }
}

static void free_list(struct file_list *fl)
{
    for (size_t i = 0; i < fl->n; i++)
        free(fl->paths[i]);
    free(fl->paths);
}

static char *read_file(const char *path, size_t *len, struct keel_diag *d)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        keel_diag_error(d, path, 0, 0, "cannot read: %s", strerror(errno));
        return NULL;
    }
    size_t cap = 8192, n = 0;
    char *buf = keel_alloc(cap);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            buf = keel_realloc(buf, cap);
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            keel_diag_error(d, path, 0, 0, "cannot read: %s", strerror(errno));
            free(buf);
            close(fd);
            return NULL;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > KEEL_CONFIG_FILE_MAX) {
            /* a config is a few KB; a symlink to /dev/zero or a log file must not eat memory */
            keel_diag_error(d, path, 0, 0, "file larger than %d MiB: not a config", KEEL_CONFIG_FILE_MAX >> 20);
            free(buf);
            close(fd);
            return NULL;
        }
    }
    close(fd);
    *len = n;
    return buf;
}

static struct keel_config *load_list(struct file_list *fl, struct keel_diag *diags)
{
    struct keel_config *cfg = config_new();
    struct keel_config_ctx c = { .cfg = cfg, .a = &cfg->impl->arena, .diag = diags };
    c.errors = fl->errors;
    for (size_t i = 0; i < fl->n; i++) {
        size_t len;
        char *data = read_file(fl->paths[i], &len, diags);
        if (data == NULL) {
            c.errors++;
            continue;
        }
        load_one(&c, keel_config_arena_strndup(c.a, fl->paths[i], strlen(fl->paths[i])), data, len);
        free(data);
    }
    cfg->fingerprint = fl->fingerprint;
    return finish(&c);
}

struct keel_config *keel_config_load_paths(const char *const *paths, size_t n, struct keel_diag *diags)
{
    struct file_list fl = { 0 };
    collect(&fl, paths, n, diags);
    struct keel_config *cfg = load_list(&fl, diags);
    free_list(&fl);
    return cfg;
}

struct keel_config *keel_config_reload(struct keel_config *old, const char *const *paths, size_t n,
                                       struct keel_diag *diags)
{
    struct file_list fl = { 0 };
    collect(&fl, paths, n, diags);
    if (old && fl.errors == 0 && fl.fingerprint == old->fingerprint) {
        free_list(&fl);
        return keel_config_ref(old);
    }
    struct keel_config *cfg = load_list(&fl, diags);
    free_list(&fl);
    if (cfg == NULL)
        atomic_fetch_add(&reload_failures, 1);
    else
        atomic_fetch_add(&reload_successes, 1);
    return cfg;
}

uint64_t keel_config_reload_failures(void)
{
    return atomic_load(&reload_failures);
}

uint64_t keel_config_reload_successes(void)
{
    return atomic_load(&reload_successes);
}

const struct keel_config_object *keel_config_find(const struct keel_config *cfg, enum keel_config_kind k,
                                                  const char *ns, const char *name)
{
    for (const struct keel_config_object *o = cfg->first[k]; o; o = o->next)
        if (!strcmp(o->name, name) && (ns == NULL || !strcmp(o->namespace, ns)))
            return o;
    return NULL;
}

const struct keel_config_object *keel_config_find_fqn(const struct keel_config *cfg, const char *fqn)
{
    void *v = keel_config_index_get(&cfg->impl->by_fqn, fqn, strlen(fqn));
    if (v == NULL || v == (void *)keel_config_ignored)
        return NULL;
    return v;
}
