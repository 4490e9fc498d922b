/* keel eval: compile one expression, evaluate it over attributes given on the command
 * line or in a JSON file, print the result as one JSON value.
 * Exit codes: 0 ok, 1 evaluation error, 2 parse/type error or bad usage. */
#include "cli/commands.h"

#include "attr/attr.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "expr/expr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct eval_ctx {
    struct keel_attr_bag bag;
    struct keel_str_pair *maps[KEEL_ATTR__COUNT]; /* owned pair arrays */
    size_t nmap[KEEL_ATTR__COUNT];
    char **owned;
    size_t nowned;
};

static char *own(struct eval_ctx *c, const char *s, size_t n)
{
    char *p = keel_strndup(s, n);
    c->owned = keel_realloc(c->owned, (c->nowned + 1) * sizeof(*c->owned));
    c->owned[c->nowned++] = p;
    return p;
}

static void map_put(struct eval_ctx *c, int id, const char *k, size_t kl, const char *v, size_t vl)
{
    struct keel_str_pair *kv = c->maps[id];
    size_t n = c->nmap[id];
    for (size_t i = 0; i < n; i++)
        if (keel_str_eq(kv[i].k, (struct keel_str){ k, kl })) {
            kv[i].v = (struct keel_str){ own(c, v, vl), vl };
            return;
        }
    kv = keel_realloc(kv, (n + 1) * sizeof(*kv));
    kv[n].k = (struct keel_str){ own(c, k, kl), kl };
    kv[n].v = (struct keel_str){ own(c, v, vl), vl };
    c->maps[id] = kv;
    c->nmap[id] = n + 1;
    struct keel_value mv = keel_value_map(kv, n + 1);
    keel_attr_bag_set(&c->bag, id, &mv);
}

static int lookup_attr(const char *name, size_t len)
{
    int id = keel_attr_lookup(name, len);
    if (id < 0) {
        const char *s = keel_attr_suggest(name, len);
        fprintf(stderr, "error: unknown attribute '%.*s'", (int)len, name);
        if (s)
            fprintf(stderr, " (did you mean '%s'?)", s);
        fprintf(stderr, "\n");
    }
    return id;
}

static int set_scalar(struct eval_ctx *c, int id, const char *v, size_t vl)
{
    struct keel_value val;
    enum keel_value_type t = keel_attr_type(id);
    if (t == KEEL_VALUE_STRING_MAP) {
        /* present but empty unless entries follow: NAME= or NAME={} */
        if (!(vl == 0 || (vl == 2 && !memcmp(v, "{}", 2)))) {
            fprintf(stderr, "error: %s is a map: give entries as %s[KEY]=VALUE\n", keel_attr_name(id), keel_attr_name(id));
            return -1;
        }
        val = keel_value_map(c->maps[id], c->nmap[id]);
        keel_attr_bag_set(&c->bag, id, &val);
        return 0;
    }
    const char *p = own(c, v, vl);
    if (keel_value_parse(t, p, vl, &val) < 0) {
        fprintf(stderr, "error: cannot parse '%.*s' as %s for %s\n", (int)vl, v, keel_value_type_name(t),
                keel_attr_name(id));
        return -1;
    }
    keel_attr_bag_set(&c->bag, id, &val);
    return 0;
}

/* NAME=VALUE or NAME[KEY]=VALUE */
static int add_attr(struct eval_ctx *c, const char *arg)
{
    const char *eq = strchr(arg, '=');
    const char *br = strchr(arg, '[');
    if (br && (!eq || br < eq)) {
        const char *close = strstr(br, "]=");
        if (!close) {
            fprintf(stderr, "error: --attr %s: expected NAME[KEY]=VALUE\n", arg);
            return -1;
        }
        int id = lookup_attr(arg, (size_t)(br - arg));
        if (id < 0)
            return -1;
        if (keel_attr_type(id) != KEEL_VALUE_STRING_MAP) {
            fprintf(stderr, "error: %s is %s, not a map\n", keel_attr_name(id), keel_value_type_name(keel_attr_type(id)));
            return -1;
        }
        map_put(c, id, br + 1, (size_t)(close - br - 1), close + 2, strlen(close + 2));
        return 0;
    }
    if (!eq) {
        fprintf(stderr, "error: --attr %s: expected NAME=VALUE\n", arg);
        return -1;
    }
    int id = lookup_attr(arg, (size_t)(eq - arg));
    return id < 0 ? -1 : set_scalar(c, id, eq + 1, strlen(eq + 1));
}

/* ---- a small JSON reader for --attrs: one object, values string/number/bool/object ---- */
struct json {
    const char *p, *end;
    const char *err;
};

static void ws(struct json *j)
{
    while (j->p < j->end && strchr(" \t\r\n", *j->p))
        j->p++;
}

/* Decodes a JSON string into a fresh owned buffer. */
static char *jstring(struct json *j, struct eval_ctx *c, size_t *len)
{
    if (j->p >= j->end || *j->p != '"') {
        j->err = "expected a string";
        return NULL;
    }
    j->p++;
    char *out = keel_alloc((size_t)(j->end - j->p) * 3 + 1);
    size_t o = 0;
    while (j->p < j->end && *j->p != '"') {
        char ch = *j->p++;
        if (ch != '\\') {
            out[o++] = ch;
            continue;
        }
        if (j->p >= j->end)
            break;
        ch = *j->p++;
        switch (ch) {
        case 'n': out[o++] = '\n'; break;
        case 't': out[o++] = '\t'; break;
        case 'r': out[o++] = '\r'; break;
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'u': {
            unsigned cp = 0;
            for (int i = 0; i < 4; i++) {
                char h = j->p < j->end ? *j->p++ : 0;
                cp = cp * 16 + (unsigned)(h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                                          : h >= 'A' && h <= 'F' ? h - 'A' + 10 : 0);
            }
            if (cp < 0x80) {
                out[o++] = (char)cp;
            } else if (cp < 0x800) {
                out[o++] = (char)(0xc0 | (cp >> 6));
                out[o++] = (char)(0x80 | (cp & 0x3f));
            } else {
                out[o++] = (char)(0xe0 | (cp >> 12));
                out[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                out[o++] = (char)(0x80 | (cp & 0x3f));
            }
            break;
        }
        default: out[o++] = ch; break;
        }
    }
    if (j->p >= j->end) {
        free(out);
        j->err = "unterminated string";
        return NULL;
    }
    j->p++;
    out[o] = 0;
    *len = o;
    c->owned = keel_realloc(c->owned, (c->nowned + 1) * sizeof(*c->owned));
    c->owned[c->nowned++] = out;
    return out;
}

/* A scalar's text: strings decoded, numbers and true/false as written. */
static const char *jscalar(struct json *j, struct eval_ctx *c, size_t *len, bool *was_string)
{
    ws(j);
    *was_string = j->p < j->end && *j->p == '"';
    if (*was_string)
        return jstring(j, c, len);
    const char *s = j->p;
    while (j->p < j->end && !strchr(" \t\r\n,}]", *j->p))
        j->p++;
    *len = (size_t)(j->p - s);
    if (*len == 0) {
        j->err = "expected a value";
        return NULL;
    }
    return s;
}

static int load_json(struct eval_ctx *c, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "error: cannot open %s\n", path);
        return -1;
    }
    struct keel_buf b = { 0 };
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
        keel_buf_append(&b, tmp, n);
    fclose(f);
    char *text = own(c, keel_buf_rptr(&b), keel_buf_len(&b));
    struct json j = { text, text + keel_buf_len(&b), NULL };
    keel_buf_release(&b);
    int rc = -1;
    ws(&j);
    if (j.p >= j.end || *j.p != '{') {
        j.err = "expected a JSON object";
        goto out;
    }
    j.p++;
    ws(&j);
    if (j.p < j.end && *j.p == '}') {
        rc = 0;
        goto out;
    }
    for (;;) {
        size_t kl;
        ws(&j);
        char *k = jstring(&j, c, &kl);
        if (!k)
            goto out;
        ws(&j);
        if (j.p >= j.end || *j.p != ':') {
            j.err = "expected ':'";
            goto out;
        }
        j.p++;
        ws(&j);
        int id = lookup_attr(k, kl);
        if (id < 0)
            return -1;
        if (j.p < j.end && *j.p == '{') {
            if (keel_attr_type(id) != KEEL_VALUE_STRING_MAP) {
                fprintf(stderr, "error: %s is not a map\n", k);
                return -1;
            }
            j.p++;
            ws(&j);
            struct keel_value mv = keel_value_map(NULL, 0);
            keel_attr_bag_set(&c->bag, id, &mv);
            while (j.p < j.end && *j.p != '}') {
                size_t mkl, mvl;
                bool str;
                ws(&j);
                char *mk = jstring(&j, c, &mkl);
                if (!mk)
                    goto out;
                ws(&j);
                if (j.p >= j.end || *j.p != ':') {
                    j.err = "expected ':'";
                    goto out;
                }
                j.p++;
                const char *v = jscalar(&j, c, &mvl, &str);
                if (!v)
                    goto out;
                map_put(c, id, mk, mkl, v, mvl);
                ws(&j);
                if (j.p < j.end && *j.p == ',')
                    j.p++;
                ws(&j);
            }
            if (j.p >= j.end) {
                j.err = "unterminated object";
                goto out;
            }
            j.p++;
        } else {
            size_t vl;
            bool str;
            const char *v = jscalar(&j, c, &vl, &str);
            if (!v)
                goto out;
            if (set_scalar(c, id, v, vl) < 0)
                return -1;
        }
        ws(&j);
        if (j.p < j.end && *j.p == ',') {
            j.p++;
            continue;
        }
        if (j.p < j.end && *j.p == '}') {
            rc = 0;
            break;
        }
        j.err = "expected ',' or '}'";
        goto out;
    }
out:
    if (rc < 0)
        fprintf(stderr, "error: %s: %s at byte %zu\n", path, j.err ? j.err : "invalid JSON", (size_t)(j.p - text));
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: keel eval [--cel] [--attr NAME=VALUE]... [--attrs FILE.json] [--type] [--disasm] EXPR\n"
               "\n"
               "Evaluates EXPR (CEXL, or CEL with --cel) and prints the result as one JSON value.\n"
               "  --attr NAME=VALUE       an attribute, VALUE parsed by its type (response.code=200,\n"
               "                          response.duration=157.830203ms, source.ip=10.0.0.1,\n"
               "                          request.time=2018-12-28T11:53:10.082342Z)\n"
               "  --attr NAME[KEY]=VALUE  a map entry (source.labels[app]=curl)\n"
               "  --attrs FILE.json       attributes as a JSON object keyed by name (maps as objects)\n"
               "  --type                  print the static result type on stderr\n"
               "  --disasm                print the bytecode on stderr\n"
               "Exit status: 0 ok, 1 evaluation error, 2 parse or type error.\n");
}

static void ctx_fini(struct eval_ctx *c)
{
    for (int i = 0; i < KEEL_ATTR__COUNT; i++)
        free(c->maps[i]);
    for (size_t i = 0; i < c->nowned; i++)
        free(c->owned[i]);
    free(c->owned);
}

int keel_cmd_eval(int argc, char **argv)
{
    struct eval_ctx *c = keel_calloc(1, sizeof(*c));
    enum keel_expr_dialect d = KEEL_EXPR_CEXL;
    const char *src = NULL;
    bool show_type = false, disasm = false;
    int rc = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--cel")) {
            d = KEEL_EXPR_CEL;
        } else if (!strcmp(a, "--cexl")) {
            d = KEEL_EXPR_CEXL;
        } else if (!strcmp(a, "--type")) {
            show_type = true;
        } else if (!strcmp(a, "--disasm")) {
            disasm = true;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            rc = 0;
            goto out;
        } else if (!strcmp(a, "--attr") || !strcmp(a, "--attrs")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "error: %s needs an argument\n", a);
                goto out;
            }
            if ((a[6] ? load_json(c, argv[++i]) : add_attr(c, argv[++i])) < 0)
                goto out;
        } else if (!strncmp(a, "--attr=", 7)) {
            if (add_attr(c, a + 7) < 0)
                goto out;
        } else if (!strncmp(a, "--attrs=", 8)) {
            if (load_json(c, a + 8) < 0)
                goto out;
        } else if (!strcmp(a, "--") && i + 1 < argc && !src) {
            src = argv[++i];
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "error: unknown option %s\n", a);
            usage(stderr);
            goto out;
        } else if (!src) {
            src = a;
        } else {
            fprintf(stderr, "error: more than one expression (quote it)\n");
            goto out;
        }
    }
    if (!src) {
        usage(stderr);
        goto out;
    }
    struct keel_expr_error err;
    struct keel_expr *e = keel_expr_compile(src, strlen(src), d, &err);
    if (!e) {
        fprintf(stderr, "error: col %d: %s\n", err.col, err.msg);
        goto out;
    }
    struct keel_buf b = { 0 };
    if (show_type)
        fprintf(stderr, "type: %s\n", keel_value_type_name(keel_expr_result_type(e)));
    if (disasm) {
        keel_expr_disasm(e, &b);
        fprintf(stderr, "%.*s", (int)keel_buf_len(&b), keel_buf_rptr(&b));
        keel_buf_consume(&b, keel_buf_len(&b));
    }
    struct keel_value v;
    const char *msg = NULL;
    if (keel_expr_eval(e, &c->bag, &v, &msg) < 0) {
        fprintf(stderr, "error: %s\n", msg);
        rc = 1;
    } else {
        keel_value_format_json(&v, &b);
        keel_buf_append(&b, "\n", 1);
        fwrite(keel_buf_rptr(&b), 1, keel_buf_len(&b), stdout);
        rc = 0;
    }
    keel_buf_release(&b);
    keel_buf_pool_drain();
    keel_expr_free(e);
out:
    ctx_fini(c);
    free(c);
    return rc;
}
