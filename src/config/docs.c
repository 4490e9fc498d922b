/* Multi-document YAML as text: split at "---" lines and say what each document defines,
 * so keel apply can replace single resources inside files and keep everything else
 * (comments included) byte for byte. */
#include "config/config_int.h"

#include "core/alloc.h"

#include <stdio.h>
#include <string.h>

static void identify(struct keel_config_doc *d, const char *p)
{
    struct keel_config_arena a = { 0 };
    struct keel_ynode **docs;
    int n = keel_yaml_parse(&a, "", p + d->off, d->len, 0, 0, &docs, NULL);
    if (n > 0 && docs[0]) {
        const struct keel_ynode *k = keel_ynode_get(docs[0], "kind");
        const struct keel_ynode *m = keel_ynode_get(docs[0], "metadata");
        const struct keel_ynode *nm = keel_ynode_get(m, "name"), *ns = keel_ynode_get(m, "namespace");
        if (k && k->type == KEEL_YNODE_SCALAR && nm && nm->type == KEEL_YNODE_SCALAR) {
            snprintf(d->kind, sizeof(d->kind), "%s", k->str);
            snprintf(d->name, sizeof(d->name), "%s", nm->str);
            snprintf(d->namespace, sizeof(d->namespace), "%s",
                     ns && ns->type == KEEL_YNODE_SCALAR && ns->len ? ns->str : "default");
        }
    }
    keel_config_arena_free(&a);
}

static bool is_separator(const char *p, const char *end)
{
    return end - p >= 3 && p[0] == '-' && p[1] == '-' && p[2] == '-' &&
           (end - p == 3 || p[3] == '\n' || p[3] == ' ' || p[3] == '\t' || p[3] == '\r');
}

size_t keel_config_split_documents(const char *data, size_t len, struct keel_config_doc **out)
{
    size_t n = 0, cap = 8;
    struct keel_config_doc *docs = keel_calloc(cap, sizeof(*docs));
    const char *p = data, *end = data + len, *start = data;
    for (;;) {
        bool sep = p < end && is_separator(p, end);
        if (p >= end || sep) {
            if (n == cap) {
                cap *= 2;
                docs = keel_realloc(docs, cap * sizeof(*docs));
            }
            memset(&docs[n], 0, sizeof(docs[n]));
            docs[n].off = (size_t)(start - data);
            docs[n].len = (size_t)(p - start);
            identify(&docs[n], data);
            n++;
            if (p >= end)
                break;
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            p = nl ? nl + 1 : end;
            start = p;
            continue;
        }
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        p = nl ? nl + 1 : end;
    }
    *out = docs;
    return n;
}
