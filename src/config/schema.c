/* Schema tables -> structs: one generic binder instead of a parser per section. Every
 * field is a row (name, spelling variants, type, offset); unknown keys, wrong types and
 * missing required fields are reported at the offending node. */
#include "config/config_int.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define AT(base, off, type) ((type *)((char *)(base) + (off)))

struct keel_config_pos keel_config_pos_of(const struct keel_ynode *n)
{
    struct keel_config_pos p = { 0 };
    if (n) {
        p.file = n->file;
        p.line = n->line;
        p.col = n->col;
    }
    return p;
}

int keel_config_scalar_str(struct keel_config_ctx *c, const struct keel_ynode *n, const char **out)
{
    if (n->type != KEEL_YNODE_SCALAR) {
        keel_config_err(c, n, "expected a string, got %s", keel_ynode_type_name(n));
        return -1;
    }
    *out = n->str;
    return 0;
}

static bool parse_i64(const char *s, int64_t *out)
{
    if (*s == '\0')
        return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end != '\0' || errno)
        return false;
    *out = v;
    return true;
}

int keel_config_scalar_int(struct keel_config_ctx *c, const struct keel_ynode *n, int64_t *out)
{
    if (n->type != KEEL_YNODE_SCALAR || n->style != KEEL_YSTYLE_PLAIN || !parse_i64(n->str, out)) {
        if (n->type == KEEL_YNODE_SCALAR)
            keel_config_err(c, n, "expected an integer, got \"%s\"", n->str);
        else
            keel_config_err(c, n, "expected an integer, got %s", keel_ynode_type_name(n));
        return -1;
    }
    return 0;
}

int keel_config_scalar_port(struct keel_config_ctx *c, const struct keel_ynode *n, int64_t *out)
{
    if (keel_config_scalar_int(c, n, out) < 0)
        return -1;
    if (*out < 1 || *out > 65535) {
        keel_config_err(c, n, "port %lld out of range 1-65535", (long long)*out);
        return -1;
    }
    return 0;
}

static int scalar_bool(struct keel_config_ctx *c, const struct keel_ynode *n, bool *out)
{
    if (n->type == KEEL_YNODE_SCALAR && n->style == KEEL_YSTYLE_PLAIN) {
        if (!strcmp(n->str, "true") || !strcmp(n->str, "True") || !strcmp(n->str, "TRUE")) {
            *out = true;
            return 0;
        }
        if (!strcmp(n->str, "false") || !strcmp(n->str, "False") || !strcmp(n->str, "FALSE")) {
            *out = false;
            return 0;
        }
    }
    if (n->type == KEEL_YNODE_SCALAR)
        keel_config_err(c, n, "expected true or false, got \"%s\"", n->str);
    else
        keel_config_err(c, n, "expected true or false, got %s", keel_ynode_type_name(n));
    return -1;
}

static int scalar_double(struct keel_config_ctx *c, const struct keel_ynode *n, double *out)
{
    if (n->type == KEEL_YNODE_SCALAR && n->style == KEEL_YSTYLE_PLAIN && n->len) {
        char *end;
        errno = 0;
        double v = strtod(n->str, &end);
        if (*end == '\0' && !errno && isfinite(v)) {
            *out = v;
            return 0;
        }
    }
    if (n->type == KEEL_YNODE_SCALAR)
        keel_config_err(c, n, "expected a number, got \"%s\"", n->str);
    else
        keel_config_err(c, n, "expected a number, got %s", keel_ynode_type_name(n));
    return -1;
}

/* Go duration text: "10m", "1.5s", "1h30m", "250ms", "100us", "0". */
int keel_config_parse_duration_ms(const char *s, int64_t *ms)
{
    if (!strcmp(s, "0")) {
        *ms = 0;
        return 0;
    }
    double total = 0;
    if (*s == '\0')
        return -1;
    while (*s) {
        char *end;
        errno = 0;
        double v = strtod(s, &end);
        if (end == s || errno || v < 0)
            return -1;
        s = end;
        double unit;
        if (!strncmp(s, "ns", 2)) { unit = 1e-6; s += 2; }
        else if (!strncmp(s, "us", 2)) { unit = 1e-3; s += 2; }
        else if (!strncmp(s, "ms", 2)) { unit = 1; s += 2; }
        else if (*s == 's') { unit = 1000; s++; }
        else if (*s == 'm') { unit = 60000; s++; }
        else if (*s == 'h') { unit = 3600000; s++; }
        else return -1;
        total += v * unit;
    }
    *ms = (int64_t)(total + 0.5);
    return 0;
}

static int scalar_enum(struct keel_config_ctx *c, const struct keel_field *f, const struct keel_ynode *n, int *out)
{
    if (n->type == KEEL_YNODE_SCALAR) {
        int64_t iv;
        int cnt = 0;
        while (f->enum_names[cnt])
            cnt++;
        for (int i = 0; i < cnt; i++)
            if (strcasecmp(f->enum_names[i], n->str) == 0) {
                *out = i;
                return 0;
            }
        if (n->style == KEEL_YSTYLE_PLAIN && parse_i64(n->str, &iv) && iv >= 0 && iv < cnt) {
            *out = (int)iv;
            return 0;
        }
        char list[256] = "";
        size_t used = 0;
        for (int i = 0; i < cnt && used < sizeof(list) - 40; i++)
            used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "", f->enum_names[i]);
        keel_config_err(c, n, "invalid value \"%s\" for %s (expected one of %s)", n->str, f->name, list);
        return -1;
    }
    keel_config_err(c, n, "\"%s\": expected a string, got %s", f->name, keel_ynode_type_name(n));
    return -1;
}

static int expect(struct keel_config_ctx *c, const struct keel_field *f, const struct keel_ynode *n,
                  enum keel_ynode_type t)
{
    if (n->type == t)
        return 0;
    static const char *names[] = { "a string", "a mapping", "a list" };
    if (n->type == KEEL_YNODE_SCALAR && !keel_ynode_is_null(n))
        keel_config_err(c, n, "\"%s\": expected %s, got \"%s\"", f->name, names[t], n->str);
    else
        keel_config_err(c, n, "\"%s\": expected %s, got %s", f->name, names[t], keel_ynode_type_name(n));
    return -1;
}

static int bind_field(struct keel_config_ctx *c, const struct keel_field *f, const struct keel_ynode *v, void *base)
{
    struct keel_config_arena *a = c->a;
    if (f->pos_off)
        *AT(base, f->pos_off, struct keel_config_pos) = keel_config_pos_of(v);
    switch (f->type) {
    case KEEL_FT_STR:
        if (v->type != KEEL_YNODE_SCALAR)
            return expect(c, f, v, KEEL_YNODE_SCALAR);
        *AT(base, f->off, const char *) = v->str;
        return 0;
    case KEEL_FT_NAME: {
        if (v->type != KEEL_YNODE_SCALAR)
            return expect(c, f, v, KEEL_YNODE_SCALAR);
        struct keel_config_name *nm = AT(base, f->off, struct keel_config_name);
        nm->s = v->str;
        nm->pos = keel_config_pos_of(v);
        return 0;
    }
    case KEEL_FT_INT:
        return keel_config_scalar_int(c, v, AT(base, f->off, int64_t));
    case KEEL_FT_PORT:
        return keel_config_scalar_port(c, v, AT(base, f->off, int64_t));
    case KEEL_FT_BOOL:
        return scalar_bool(c, v, AT(base, f->off, bool));
    case KEEL_FT_BOOL3: {
        bool b;
        if (scalar_bool(c, v, &b) < 0)
            return -1;
        *AT(base, f->off, int) = b;
        return 0;
    }
    case KEEL_FT_DOUBLE:
        return scalar_double(c, v, AT(base, f->off, double));
    case KEEL_FT_DURATION:
        if (v->type != KEEL_YNODE_SCALAR || keel_config_parse_duration_ms(v->str, AT(base, f->off, int64_t)) < 0) {
            if (v->type == KEEL_YNODE_SCALAR)
                keel_config_err(c, v, "invalid duration \"%s\" (expected e.g. 10s, 1m, 250ms)", v->str);
            else
                keel_config_err(c, v, "\"%s\": expected a duration, got %s", f->name, keel_ynode_type_name(v));
            return -1;
        }
        return 0;
    case KEEL_FT_ENUM:
        return scalar_enum(c, f, v, AT(base, f->off, int));
    case KEEL_FT_EXPR: {
        if (v->type != KEEL_YNODE_SCALAR)
            return expect(c, f, v, KEEL_YNODE_SCALAR);
        enum keel_config_dialect d = f->lang == KEEL_LANG_CEL ? KEEL_CONFIG_CEL : c->mixer_dialect;
        return keel_config_expr_compile(c, AT(base, f->off, struct keel_config_expr), v, d, f->want);
    }
    case KEEL_FT_KVMAP:
    case KEEL_FT_EXPRMAP: {
        if (expect(c, f, v, KEEL_YNODE_MAP) < 0)
            return -1;
        int rc = 0;
        if (f->type == KEEL_FT_KVMAP) {
            struct keel_config_kv *kv = keel_config_arena_alloc(a, (v->n ? v->n : 1) * sizeof(*kv));
            for (size_t i = 0; i < v->n; i++) {
                const struct keel_ynode *k = v->kids[2 * i], *val = v->kids[2 * i + 1];
                kv[i].key = k->type == KEEL_YNODE_SCALAR ? k->str : "";
                kv[i].pos = keel_config_pos_of(val);
                if (val->type != KEEL_YNODE_SCALAR) {
                    keel_config_err(c, val, "\"%s\": expected a string, got %s", kv[i].key,
                                    keel_ynode_type_name(val));
                    rc = -1;
                }
                kv[i].value = val->type == KEEL_YNODE_SCALAR ? val->str : "";
            }
            *AT(base, f->off, struct keel_config_kv *) = kv;
        } else {
            struct keel_config_named_expr *ne = keel_config_arena_alloc(a, (v->n ? v->n : 1) * sizeof(*ne));
            enum keel_config_dialect d = f->lang == KEEL_LANG_CEL ? KEEL_CONFIG_CEL : c->mixer_dialect;
            for (size_t i = 0; i < v->n; i++) {
                const struct keel_ynode *k = v->kids[2 * i], *val = v->kids[2 * i + 1];
                ne[i].name = k->type == KEEL_YNODE_SCALAR ? k->str : "";
                if (val->type != KEEL_YNODE_SCALAR) {
                    keel_config_err(c, val, "\"%s\": expected an expression string, got %s", ne[i].name,
                                    keel_ynode_type_name(val));
                    rc = -1;
                    continue;
                }
                if (keel_config_expr_compile(c, &ne[i].expr, val, d, f->want) < 0)
                    rc = -1;
            }
            *AT(base, f->off, struct keel_config_named_expr *) = ne;
        }
        *AT(base, f->off2, size_t) = v->n;
        return rc;
    }
    case KEEL_FT_OBJ:
        if (expect(c, f, v, KEEL_YNODE_MAP) < 0)
            return -1;
        return keel_config_bind(c, f->sub, v, AT(base, f->off, void));
    case KEEL_FT_LIST: {
        if (expect(c, f, v, KEEL_YNODE_SEQ) < 0)
            return -1;
        char *arr = keel_config_arena_alloc(a, (v->n ? v->n : 1) * f->elem_size);
        int rc = 0;
        for (size_t i = 0; i < v->n; i++) {
            const struct keel_ynode *it = v->kids[i];
            if (it->type != KEEL_YNODE_MAP) {
                keel_config_err(c, it, "\"%s\" items: expected a mapping, got %s", f->name,
                                it->type == KEEL_YNODE_SCALAR && !keel_ynode_is_null(it) ? "a scalar"
                                                                                          : keel_ynode_type_name(it));
                rc = -1;
                continue;
            }
            if (keel_config_bind(c, f->sub, it, arr + i * f->elem_size) < 0)
                rc = -1;
        }
        *AT(base, f->off, void *) = arr;
        *AT(base, f->off2, size_t) = v->n;
        return rc;
    }
    case KEEL_FT_NAMELIST:
    case KEEL_FT_STRLIST:
    case KEEL_FT_DBLLIST: {
        if (expect(c, f, v, KEEL_YNODE_SEQ) < 0)
            return -1;
        int rc = 0;
        size_t esz = f->type == KEEL_FT_NAMELIST  ? sizeof(struct keel_config_name)
                     : f->type == KEEL_FT_STRLIST ? sizeof(const char *)
                                                  : sizeof(double);
        char *arr = keel_config_arena_alloc(a, (v->n ? v->n : 1) * esz);
        for (size_t i = 0; i < v->n; i++) {
            const struct keel_ynode *it = v->kids[i];
            if (f->type == KEEL_FT_DBLLIST) {
                if (scalar_double(c, it, (double *)arr + i) < 0)
                    rc = -1;
                continue;
            }
            if (it->type != KEEL_YNODE_SCALAR) {
                keel_config_err(c, it, "\"%s\" items: expected a string, got %s", f->name,
                                keel_ynode_type_name(it));
                rc = -1;
                continue;
            }
            if (f->type == KEEL_FT_NAMELIST) {
                struct keel_config_name *nm = (struct keel_config_name *)arr + i;
                nm->s = it->str;
                nm->pos = keel_config_pos_of(it);
            } else {
                ((const char **)arr)[i] = it->str;
            }
        }
        *AT(base, f->off, void *) = arr;
        *AT(base, f->off2, size_t) = v->n;
        return rc;
    }
    case KEEL_FT_ANY:
        return 0;
    case KEEL_FT_CUSTOM:
        return f->fn(c, v, base);
    }
    return 0;
}

static const struct keel_field *find_field(const struct keel_config_schema *s, const char *key)
{
    for (const struct keel_field *f = s->fields; f->name; f++)
        if (!strcmp(f->name, key) || (f->alt && !strcmp(f->alt, key)))
            return f;
    return NULL;
}

int keel_config_bind(struct keel_config_ctx *c, const struct keel_config_schema *s, const struct keel_ynode *n,
                     void *base)
{
    int rc = 0;
    if (n->type != KEEL_YNODE_MAP) {
        keel_config_err(c, n, "%s: expected a mapping, got %s", s->what, keel_ynode_type_name(n));
        return -1;
    }
    if (s->has_pos)
        *(struct keel_config_pos *)base = keel_config_pos_of(n);
    size_t nf = 0;
    for (; s->fields[nf].name; nf++) {
        const struct keel_field *f = &s->fields[nf];
        if (f->type == KEEL_FT_BOOL3)
            *AT(base, f->off, int) = -1;
        else if (f->type == KEEL_FT_DOUBLE && f->neg_default)
            *AT(base, f->off, double) = -1;
    }
    const struct keel_ynode *seen[64] = { 0 };
    for (size_t i = 0; i < n->n; i++) {
        const struct keel_ynode *k = n->kids[2 * i], *v = n->kids[2 * i + 1];
        if (k->type != KEEL_YNODE_SCALAR) {
            keel_config_err(c, k, "%s: keys must be strings", s->what);
            rc = -1;
            continue;
        }
        bool dup = false;
        for (size_t j = 0; j < i && !dup; j++) {
            const struct keel_ynode *pk = n->kids[2 * j];
            if (pk->type == KEEL_YNODE_SCALAR && !strcmp(pk->str, k->str)) {
                keel_config_err(c, k, "duplicate key \"%s\" (first at line %d)", k->str, pk->line);
                rc = -1;
                dup = true;
            }
        }
        if (dup)
            continue; /* binding it again would overwrite (and leak) the first one's value */
        const struct keel_field *f = find_field(s, k->str);
        if (f == NULL) {
            if (s->unknown == KEEL_UNKNOWN_ERROR) {
                keel_config_err(c, k, "unknown field \"%s\" in %s", k->str, s->what);
                rc = -1;
            } else if (s->unknown == KEEL_UNKNOWN_WARN) {
                keel_config_warn(c, k, "unknown field \"%s\" in %s (ignored)", k->str, s->what);
            }
            continue;
        }
        size_t fi = (size_t)(f - s->fields);
        if (fi < 64)
            seen[fi] = v;
        if (keel_ynode_is_null(v))
            continue; /* "key:" with nothing = absent */
        if (bind_field(c, f, v, base) < 0)
            rc = -1;
    }
    for (size_t fi = 0; fi < nf && fi < 64; fi++)
        if (s->fields[fi].required && (seen[fi] == NULL || keel_ynode_is_null(seen[fi]))) {
            keel_config_err(c, n, "missing required field \"%s\" in %s", s->fields[fi].name, s->what);
            rc = -1;
        }
    return rc;
}
