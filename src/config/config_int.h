/* What the files of src/config/ share: the arena, the positioned YAML tree, the schema
 * binder and the load context. */
#ifndef KEEL_CONFIG_INT_H
#define KEEL_CONFIG_INT_H

#include "config/config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- arena: everything of one generation, freed whole ---- */

struct keel_config_arena {
    struct keel_config_chunk *head;
};

void *keel_config_arena_alloc(struct keel_config_arena *a, size_t n); /* zeroed */
char *keel_config_arena_strndup(struct keel_config_arena *a, const char *s, size_t n);
char *keel_config_arena_printf(struct keel_config_arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void keel_config_arena_free(struct keel_config_arena *a);

/* ---- YAML tree (yaml.c) ---- */

enum keel_ynode_type { KEEL_YNODE_SCALAR, KEEL_YNODE_MAP, KEEL_YNODE_SEQ };
enum keel_ynode_style { KEEL_YSTYLE_PLAIN, KEEL_YSTYLE_SINGLE, KEEL_YSTYLE_DOUBLE, KEEL_YSTYLE_BLOCK };

struct keel_ynode {
    enum keel_ynode_type type;
    enum keel_ynode_style style; /* scalars */
    const char *file;
    int line, col;               /* 1-based, of the node's first character (quote included) */
    const char *str;             /* scalar value, NUL-terminated */
    size_t len;
    size_t n;                    /* SEQ: items; MAP: pairs */
    struct keel_ynode **kids;    /* SEQ: kids[i]; MAP: kids[2i] key, kids[2i+1] value */
    int block_line, block_indent; /* BLOCK scalars: first content line and its indent */
    const char *raw;             /* multi-line scalars: the source text from the node's first character */
    size_t raw_len;
    int raw_col_off;             /* column shift of every raw line (the ConfigMap mesh string) */
};

/* Parse every document of data into roots (NULL for empty documents). Positions are
 * shifted by line_off / col_off (used for the YAML string inside ConfigMap istio).
 * Returns the number of documents, or -1 after reporting a syntax error. */
int keel_yaml_parse(struct keel_config_arena *a, const char *file, const char *data, size_t len, int line_off,
                    int col_off, struct keel_ynode ***docs, struct keel_diag *diag);

const struct keel_ynode *keel_ynode_get(const struct keel_ynode *map, const char *key);
const char *keel_ynode_type_name(const struct keel_ynode *n);
bool keel_ynode_is_null(const struct keel_ynode *n);

/* ---- load context ---- */

struct keel_config_impl;

struct keel_config_ctx {
    struct keel_config *cfg;
    struct keel_config_arena *a;
    struct keel_diag *diag;
    int errors; /* errors reported through this context */
    enum keel_config_dialect mixer_dialect; /* CEXL unless policy.istio.io/lang says CEL */
    const char *what;                       /* "metric spec", for messages */
};

void keel_config_err(struct keel_config_ctx *c, const struct keel_ynode *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void keel_config_warn(struct keel_config_ctx *c, const struct keel_ynode *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void keel_config_err_at(struct keel_config_ctx *c, const struct keel_config_pos *p, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void keel_config_warn_at(struct keel_config_ctx *c, const struct keel_config_pos *p, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- schema tables (schema.c) ---- */

enum keel_field_type {
    KEEL_FT_STR,      /* const char * */
    KEEL_FT_INT,      /* int64_t */
    KEEL_FT_PORT,     /* int64_t in 1..65535 */
    KEEL_FT_BOOL,     /* bool */
    KEEL_FT_BOOL3,    /* int: -1 unset, 0, 1 */
    KEEL_FT_DOUBLE,   /* double */
    KEEL_FT_DURATION, /* int64_t milliseconds, from "10m", "1.5s", ... */
    KEEL_FT_ENUM,     /* int: index into names */
    KEEL_FT_EXPR,     /* struct keel_config_expr */
    KEEL_FT_NAME,     /* struct keel_config_name */
    KEEL_FT_KVMAP,    /* struct keel_config_kv *, size_t count at off2 */
    KEEL_FT_EXPRMAP,  /* struct keel_config_named_expr *, count at off2 */
    KEEL_FT_OBJ,      /* embedded struct bound by sub */
    KEEL_FT_LIST,     /* array of structs (elem_size) bound by sub, count at off2 */
    KEEL_FT_NAMELIST, /* struct keel_config_name *, count at off2 */
    KEEL_FT_STRLIST,  /* const char **, count at off2 */
    KEEL_FT_DBLLIST,  /* double *, count at off2 */
    KEEL_FT_ANY,      /* accepted and ignored */
    KEEL_FT_CUSTOM,   /* fn(ctx, node, base) */
};

enum keel_unknown_policy { KEEL_UNKNOWN_ERROR, KEEL_UNKNOWN_IGNORE, KEEL_UNKNOWN_WARN };

/* expected result type of an expression field */
enum keel_expr_want { KEEL_WANT_ANY, KEEL_WANT_STRING, KEEL_WANT_BOOL, KEEL_WANT_TIMESTAMP };
enum keel_expr_lang { KEEL_LANG_MIXER, KEEL_LANG_CEL };

struct keel_config_schema;

struct keel_field {
    const char *name;
    const char *alt; /* camelCase / snake_case spelling */
    enum keel_field_type type;
    size_t off, off2;
    const struct keel_config_schema *sub;
    size_t elem_size;
    const char *const *enum_names; /* NULL-terminated */
    bool required;
    enum keel_expr_lang lang;
    enum keel_expr_want want;
    int (*fn)(struct keel_config_ctx *c, const struct keel_ynode *n, void *base);
    bool neg_default; /* FT_DOUBLE: -1 when absent */
    size_t pos_off; /* FT_STR/INT/...: where to store the value's position, 0 = nowhere */
};

struct keel_config_schema {
    const char *what; /* "metric spec" */
    const struct keel_field *fields;
    enum keel_unknown_policy unknown;
    bool has_pos; /* the struct begins with a struct keel_config_pos */
};

/* Bind map node n into the struct at base. 0 ok, -1 after reporting errors. */
int keel_config_bind(struct keel_config_ctx *c, const struct keel_config_schema *s, const struct keel_ynode *n,
                     void *base);
struct keel_config_pos keel_config_pos_of(const struct keel_ynode *n);
/* Scalar helpers (report the error themselves). */
int keel_config_scalar_str(struct keel_config_ctx *c, const struct keel_ynode *n, const char **out);
int keel_config_scalar_int(struct keel_config_ctx *c, const struct keel_ynode *n, int64_t *out);
int keel_config_scalar_port(struct keel_config_ctx *c, const struct keel_ynode *n, int64_t *out);
int keel_config_parse_duration_ms(const char *s, int64_t *ms);

/* The one place expressions are compiled (expr.c). */
int keel_config_expr_compile(struct keel_config_ctx *c, struct keel_config_expr *e, const struct keel_ynode *n,
                             enum keel_config_dialect d, enum keel_expr_want want);
void keel_config_expr_release(struct keel_config_expr *e);

/* ---- kinds (kinds.c) and model (model.c) ---- */

/* Bind one document (a List: each item) and add what it defines to the generation;
 * errors and warnings go to the context. */
void keel_config_bind_document(struct keel_config_ctx *c, const struct keel_ynode *doc);
void keel_config_add_object(struct keel_config_ctx *c, struct keel_config_object *o);
int keel_config_bind_mesh(struct keel_config_ctx *c, const struct keel_ynode *root, struct keel_config_mesh *m);
void keel_config_mesh_defaults(struct keel_config_mesh *m);
int keel_config_model(struct keel_config_ctx *c);
int keel_config_build_registry(struct keel_config_ctx *c);
/* routing.c: after the registry; fills cfg->routing */
int keel_config_build_routing(struct keel_config_ctx *c);
void keel_config_routing_fini(struct keel_config_impl *im);
/* routing_kinds.c */
extern const struct keel_config_schema keel_config_vs_schema, keel_config_dr_schema, keel_config_igw_schema;

/* ---- string hash index ---- */

struct keel_config_index {
    const char **keys;
    void **vals;
    size_t cap, n;
};
void *keel_config_index_get(const struct keel_config_index *ix, const char *key, size_t len);
/* returns the existing value when key is present (and does not replace it) */
void *keel_config_index_put(struct keel_config_index *ix, const char *key, void *val);
void keel_config_index_fini(struct keel_config_index *ix);

/* by_fqn value of a Mixer resource that is known but unsupported (warned, not loaded) */
extern const char keel_config_ignored[];

struct keel_config_impl {
    struct keel_config_arena arena;
    struct keel_config_index by_fqn;      /* mixer keys name.kind.ns */
    struct keel_config_index by_identity; /* "Kind/ns/name" */
    struct keel_config_index services;    /* fqdn -> registry service */
    struct keel_config_index workloads;   /* name.ns -> registry workload */
    struct keel_config_expr **exprs;      /* compiled, to release */
    size_t n_exprs, cap_exprs;
    struct keel_config_object **objs;     /* all objects in load order */
    size_t n_objs, cap_objs;
    void **regexes;                       /* regex_t of the routing matches, to regfree */
    size_t n_regexes, cap_regexes;
};

#endif
