/* keel apply -f FILE [--config-dir DIR]: validate FILE together with what DIR holds,
 * then write atomically (temp file + rename) so watchers reload. A resource with the
 * same kind, namespace and name as one of FILE's replaces the old one, wherever it is:
 * the file that held it is rewritten without it (other documents kept byte for byte). */
#include "cli/commands.h"

#include "config/config.h"
#include "core/alloc.h"
#include "mesh/mesh.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct file {
    char *path;
    char *data; /* current content */
    size_t len;
    char *out;  /* new content (when changed) */
    size_t out_len;
    bool changed, is_target, existed, has_resources;
};

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 8192, n = 0;
    char *buf = keel_alloc(cap);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap)
            buf = keel_realloc(buf, cap *= 2);
    }
    bool err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static bool same_id(const struct keel_config_doc *a, const struct keel_config_doc *b)
{
    return a->kind[0] && !strcmp(a->kind, b->kind) && !strcmp(a->namespace, b->namespace) &&
           !strcmp(a->name, b->name);
}

static void append(char **out, size_t *len, size_t *cap, const char *p, size_t n)
{
    if (*len + n + 1 > *cap) {
        while (*len + n + 1 > *cap)
            *cap = *cap ? *cap * 2 : 4096;
        *out = keel_realloc(*out, *cap);
    }
    memcpy(*out + *len, p, n);
    *len += n;
}

/* Keep the documents of f that FILE does not redefine; mark what was replaced. */
static void filter_file(struct file *f, const struct keel_config_doc *nd, size_t n_nd, bool *replaced)
{
    struct keel_config_doc *docs;
    size_t n = keel_config_split_documents(f->data, f->len, &docs);
    size_t cap = 0;
    f->out = NULL;
    f->out_len = 0;
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        bool drop = false;
        for (size_t j = 0; j < n_nd; j++)
            if (same_id(&docs[i], &nd[j])) {
                drop = true;
                replaced[j] = true;
            }
        if (drop) {
            f->changed = true;
            continue;
        }
        if (docs[i].kind[0])
            f->has_resources = true;
        if (!first)
            append(&f->out, &f->out_len, &cap, "---\n", 4);
        first = false;
        append(&f->out, &f->out_len, &cap, f->data + docs[i].off, docs[i].len);
    }
    if (f->out == NULL)
        f->out = keel_alloc(1);
    free(docs);
}

static int write_atomic(const char *dir, const char *path, const char *data, size_t len)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s/.keel-apply.XXXXXX", dir);
    int fd = mkstemp(tmp);
    if (fd < 0)
        return -1;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            close(fd);
            unlink(tmp);
            return -1;
        }
        off += (size_t)w;
    }
    if (fchmod(fd, 0644) < 0 || fsync(fd) < 0 || close(fd) < 0 || rename(tmp, path) < 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int usage(FILE *out)
{
    fprintf(out, "usage: keel apply -f FILE [--config-dir DIR]\n\n"
                 "Validate FILE against DIR's current contents (default: the running keel mesh's\n"
                 "config dir, else ./keel.d), then write it\n"
                 "into DIR atomically. Resources with the same kind, namespace and name are replaced.\n");
    return out == stderr ? 2 : 0;
}

static bool yaml_name(const char *s)
{
    size_t n = strlen(s);
    return s[0] != '.' && ((n > 5 && !strcmp(s + n - 5, ".yaml")) || (n > 4 && !strcmp(s + n - 4, ".yml")));
}

static int cmp_file(const void *a, const void *b)
{
    return strcmp(((const struct file *)a)->path, ((const struct file *)b)->path);
}

int keel_cmd_apply(int argc, char **argv)
{
    const char *file = NULL, *dir = "keel.d";
    bool dir_given = false;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-f") || !strcmp(argv[i], "--filename")) && i + 1 < argc)
            file = argv[++i];
        else if (!strcmp(argv[i], "--config-dir") && i + 1 < argc)
            dir = argv[++i], dir_given = true;
        else if (!strncmp(argv[i], "--config-dir=", 13))
            dir = argv[i] + 13, dir_given = true;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
            return usage(stdout);
        else
            return usage(stderr);
    }
    if (file == NULL)
        return usage(stderr);
    /* no --config-dir: the running local mesh's (keel mesh up), whose proxies watch it */
    char mesh_state[2048], mesh_dir[2048];
    keel_mesh_state_dir(mesh_state, sizeof(mesh_state), NULL);
    if (!dir_given && keel_mesh_state_config_dir(mesh_state, mesh_dir, sizeof(mesh_dir)) == 0)
        dir = mesh_dir;
    size_t nlen;
    char *ndata = slurp(file, &nlen);
    if (ndata == NULL) {
        fprintf(stderr, "%s: error: cannot read: %s\n", file, strerror(errno));
        return 1;
    }
    struct keel_config_doc *nd;
    size_t n_nd = keel_config_split_documents(ndata, nlen, &nd);
    bool *replaced = keel_calloc(n_nd ? n_nd : 1, sizeof(bool));

    char *fcopy = keel_strdup(file);
    char target[4096];
    snprintf(target, sizeof(target), "%s/%s", dir, basename(fcopy));
    free(fcopy);

    /* the dir's files */
    struct file *files = NULL;
    size_t n_files = 0;
    DIR *d = opendir(dir);
    if (d == NULL && errno != ENOENT) {
        fprintf(stderr, "%s: error: cannot read directory: %s\n", dir, strerror(errno));
        free(ndata);
        free(nd);
        free(replaced);
        return 1;
    }
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (!yaml_name(e->d_name))
                continue;
            files = keel_realloc(files, (n_files + 1) * sizeof(*files));
            struct file *f = &files[n_files];
            memset(f, 0, sizeof(*f));
            size_t pl = strlen(dir) + strlen(e->d_name) + 2;
            f->path = keel_alloc(pl);
            snprintf(f->path, pl, "%s/%s", dir, e->d_name);
            f->data = slurp(f->path, &f->len);
            if (f->data == NULL)
                continue; /* vanished meanwhile */
            f->existed = true;
            f->is_target = !strcmp(f->path, target);
            n_files++;
        }
        closedir(d);
        qsort(files, n_files, sizeof(*files), cmp_file);
    }
    struct file *tf = NULL;
    for (size_t i = 0; i < n_files; i++) {
        filter_file(&files[i], nd, n_nd, replaced);
        if (files[i].is_target)
            tf = &files[i];
    }
    /* the target's content: what it keeps of its old self, then FILE */
    char *tdata;
    size_t tlen;
    if (tf && tf->out_len > 0 && tf->has_resources) {
        size_t cap = 0;
        tdata = NULL;
        tlen = 0;
        append(&tdata, &tlen, &cap, tf->out, tf->out_len);
        if (tlen && tdata[tlen - 1] != '\n')
            append(&tdata, &tlen, &cap, "\n", 1);
        append(&tdata, &tlen, &cap, "---\n", 4);
        append(&tdata, &tlen, &cap, ndata, nlen);
    } else {
        tdata = keel_strndup(ndata, nlen);
        tlen = nlen;
    }
    /* validate the would-be dir: FILE under its own name so errors point into it */
    struct keel_config_source *src = keel_calloc(n_files + 1, sizeof(*src));
    size_t ns = 0;
    for (size_t i = 0; i < n_files; i++) {
        if (files[i].is_target)
            continue;
        src[ns++] = (struct keel_config_source){ files[i].path, files[i].changed ? files[i].out : files[i].data,
                                                 files[i].changed ? files[i].out_len : files[i].len };
    }
    bool merged = tdata != NULL && tf && tf->has_resources && tf->out_len > 0;
    src[ns++] = (struct keel_config_source){ merged ? target : file, tdata, tlen };
    struct keel_diag diag;
    keel_diag_init(&diag);
    struct keel_config *cfg = keel_config_load_sources(src, ns, &diag);
    for (size_t i = 0; i < diag.n; i++)
        fprintf(stderr, "%s\n", diag.msgs[i]);
    int rc = 0;
    if (cfg == NULL) {
        fprintf(stderr, "%s: not applied (%zu error%s)\n", file, diag.errors, diag.errors == 1 ? "" : "s");
        rc = 1;
        goto out;
    }
    keel_config_unref(cfg);
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "%s: error: cannot create: %s\n", dir, strerror(errno));
        rc = 1;
        goto out;
    }
    /* first take the replaced resources out of other files, then write the target */
    for (size_t i = 0; i < n_files; i++) {
        struct file *f = &files[i];
        if (!f->changed || f->is_target)
            continue;
        int r = f->has_resources ? write_atomic(dir, f->path, f->out, f->out_len) : unlink(f->path);
        if (r < 0) {
            fprintf(stderr, "%s: error: cannot write: %s\n", f->path, strerror(errno));
            rc = 1;
            goto out;
        }
    }
    if (write_atomic(dir, target, tdata, tlen) < 0) {
        fprintf(stderr, "%s: error: cannot write: %s\n", target, strerror(errno));
        rc = 1;
        goto out;
    }
    for (size_t j = 0; j < n_nd; j++)
        if (nd[j].kind[0])
            printf("%s/%s (namespace %s) %s\n", nd[j].kind, nd[j].name, nd[j].namespace,
                   replaced[j] ? "configured" : "created");
out:
    keel_diag_fini(&diag);
    free(src);
    free(tdata);
    for (size_t i = 0; i < n_files; i++) {
        free(files[i].path);
        free(files[i].data);
        free(files[i].out);
    }
    free(files);
    free(ndata);
    free(nd);
    free(replaced);
    return rc;
}
