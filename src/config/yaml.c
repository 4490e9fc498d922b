/* libyaml events -> a small tree whose every node keeps file:line:col (as h2o's yoml).
 * The tree lives in the load arena; binding (schema.c) reads it, nothing else does. */
#include "config/config_int.h"

#include "core/alloc.h"

#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* Aliases make the tree a DAG that the binder walks as a tree, so a few hundred bytes of
 * nested aliases ("billion laughs") would expand to billions of node visits. Every load
 * counts its nodes as expanded (a node 1, an alias the expanded size of its anchor) and
 * stops at a budget proportional to the input, capped: a real config reuses an anchor a
 * few times, never a million. */
#define YAML_EXPAND_BASE 10000
#define YAML_EXPAND_PER_BYTE 16
#define YAML_EXPAND_MAX 1000000

struct anchor {
    const char *name;
    struct keel_ynode *node;
    size_t weight; /* expanded node count; 0 while the node is still being parsed */
};

struct yparse {
    yaml_parser_t p;
    struct keel_config_arena *a;
    const char *file;
    const char *data;
    size_t len;
    int line_off, col_off;
    struct anchor *anchors;
    size_t n_anchors, cap_anchors;
    struct keel_diag *diag;
    int depth;
    size_t expanded, budget; /* nodes as the binder will see them (see YAML_EXPAND_MAX) */
};

static void syntax_error(struct yparse *y)
{
    const char *what = y->p.problem ? y->p.problem : "invalid YAML";
    int line = (int)y->p.problem_mark.line + 1 + y->line_off;
    int col = (int)y->p.problem_mark.column + 1 + y->col_off;
    if (y->p.problem_mark.index >= y->len) {
        /* at the end of the input libyaml moves its mark to a line of its own, past the
         * text (for the mesh string inside a ConfigMap: past the string); report the
         * position where the text really ends */
        line = 1 + y->line_off;
        col = 1 + y->col_off;
        for (size_t i = 0; i < y->len; i++) {
            if (y->data[i] == '\n') {
                line++;
                col = 1 + y->col_off;
            } else {
                col++;
            }
        }
    }
    if (y->p.context)
        keel_diag_error(y->diag, y->file, line, col, "YAML syntax error: %s %s", what, y->p.context);
    else
        keel_diag_error(y->diag, y->file, line, col, "YAML syntax error: %s", what);
}

static struct keel_ynode *new_node(struct yparse *y, enum keel_ynode_type t, const yaml_mark_t *m)
{
    struct keel_ynode *n = keel_config_arena_alloc(y->a, sizeof(*n));
    n->type = t;
    n->file = y->file;
    n->line = (int)m->line + 1 + y->line_off;
    n->col = (int)m->column + 1 + y->col_off;
    return n;
}

/* Index of the anchor added for n (SIZE_MAX when none), to set its weight once parsed. */
static size_t add_anchor(struct yparse *y, const yaml_char_t *name, struct keel_ynode *n)
{
    if (name == NULL)
        return SIZE_MAX;
    if (y->n_anchors == y->cap_anchors) {
        y->cap_anchors = y->cap_anchors ? 2 * y->cap_anchors : 8;
        y->anchors = keel_realloc(y->anchors, y->cap_anchors * sizeof(*y->anchors));
    }
    y->anchors[y->n_anchors].name = keel_config_arena_strndup(y->a, (const char *)name, strlen((const char *)name));
    y->anchors[y->n_anchors].weight = 0;
    y->anchors[y->n_anchors].node = n;
    return y->n_anchors++;
}

/* Count w more expanded nodes; false (with the error at m) past the budget. */
static bool spend(struct yparse *y, size_t w, const yaml_mark_t *m)
{
    if (w <= y->budget - y->expanded) {
        y->expanded += w;
        return true;
    }
    keel_diag_error(y->diag, y->file, (int)m->line + 1 + y->line_off, (int)m->column + 1 + y->col_off,
                    "YAML aliases expand to more than %zu nodes (nested aliases, \"billion laughs\"?)",
                    y->budget);
    return false;
}

/* Parse the node whose first event is ev (already taken). NULL after an error. */
static struct keel_ynode *parse_node(struct yparse *y, yaml_event_t *ev)
{
    struct keel_ynode *n = NULL;
    if (++y->depth > 64) {
        keel_diag_error(y->diag, y->file, (int)ev->start_mark.line + 1 + y->line_off,
                        (int)ev->start_mark.column + 1 + y->col_off, "YAML nesting too deep");
        return NULL;
    }
    size_t before = y->expanded;
    if (ev->type != YAML_ALIAS_EVENT && !spend(y, 1, &ev->start_mark))
        return NULL;
    switch (ev->type) {
    case YAML_SCALAR_EVENT: {
        n = new_node(y, KEEL_YNODE_SCALAR, &ev->start_mark);
        n->str = keel_config_arena_strndup(y->a, (const char *)ev->data.scalar.value, ev->data.scalar.length);
        n->len = ev->data.scalar.length;
        switch (ev->data.scalar.style) {
        case YAML_SINGLE_QUOTED_SCALAR_STYLE: n->style = KEEL_YSTYLE_SINGLE; break;
        case YAML_DOUBLE_QUOTED_SCALAR_STYLE: n->style = KEEL_YSTYLE_DOUBLE; break;
        case YAML_LITERAL_SCALAR_STYLE:
        case YAML_FOLDED_SCALAR_STYLE: {
            n->style = KEEL_YSTYLE_BLOCK;
            /* content starts on the line after the indicator; find its indent */
            size_t i = ev->start_mark.index;
            while (i < y->len && y->data[i] != '\n')
                i++;
            int line = n->line;
            for (;;) {
                if (i >= y->len)
                    break;
                i++; /* past '\n' */
                line++;
                size_t s = i;
                while (i < y->len && y->data[i] == ' ')
                    i++;
                if (i < y->len && y->data[i] != '\n') {
                    n->block_line = line;
                    n->block_indent = (int)(i - s);
                    break;
                }
            }
            break;
        }
        default: n->style = KEEL_YSTYLE_PLAIN; break;
        }
        /* a scalar over several lines keeps its source, so that a column inside its value
         * (an expression error) can be mapped back to the right line (expr.c) */
        if (ev->end_mark.line != ev->start_mark.line && ev->end_mark.index <= y->len &&
            ev->start_mark.index < ev->end_mark.index) {
            n->raw_len = ev->end_mark.index - ev->start_mark.index;
            n->raw = keel_config_arena_strndup(y->a, y->data + ev->start_mark.index, n->raw_len);
            n->raw_col_off = y->col_off;
        }
        size_t ai = add_anchor(y, ev->data.scalar.anchor, n);
        if (ai != SIZE_MAX)
            y->anchors[ai].weight = 1;
        break;
    }
    case YAML_ALIAS_EVENT: {
        size_t weight = 0;
        for (size_t i = y->n_anchors; i-- > 0 && n == NULL;)
            if (strcmp(y->anchors[i].name, (const char *)ev->data.alias.anchor) == 0) {
                n = y->anchors[i].node;
                weight = y->anchors[i].weight;
            }
        if (n == NULL) {
            keel_diag_error(y->diag, y->file, (int)ev->start_mark.line + 1 + y->line_off,
                            (int)ev->start_mark.column + 1 + y->col_off, "unknown YAML alias '%s'",
                            ev->data.alias.anchor);
        } else if (weight == 0) {
            /* inside the node it names: a cycle, which the binder would walk forever */
            keel_diag_error(y->diag, y->file, (int)ev->start_mark.line + 1 + y->line_off,
                            (int)ev->start_mark.column + 1 + y->col_off,
                            "YAML alias '%s' refers to a node that contains it", ev->data.alias.anchor);
            n = NULL;
        } else if (!spend(y, weight, &ev->start_mark)) {
            n = NULL;
        }
        break;
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        bool map = ev->type == YAML_MAPPING_START_EVENT;
        n = new_node(y, map ? KEEL_YNODE_MAP : KEEL_YNODE_SEQ, &ev->start_mark);
        size_t ai = add_anchor(y, map ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor, n);
        size_t cap = 0, cnt = 0;
        struct keel_ynode **kids = NULL;
        for (;;) {
            yaml_event_t e;
            if (!yaml_parser_parse(&y->p, &e)) {
                syntax_error(y);
                free(kids);
                return NULL;
            }
            if (e.type == YAML_MAPPING_END_EVENT || e.type == YAML_SEQUENCE_END_EVENT) {
                yaml_event_delete(&e);
                break;
            }
            struct keel_ynode *k = parse_node(y, &e);
            yaml_event_delete(&e);
            if (k == NULL) {
                free(kids);
                return NULL;
            }
            if (cnt == cap) {
                cap = cap ? cap * 2 : 8;
                kids = keel_realloc(kids, cap * sizeof(*kids));
            }
            kids[cnt++] = k;
        }
        n->kids = keel_config_arena_alloc(y->a, (cnt ? cnt : 1) * sizeof(*kids));
        if (cnt)
            memcpy(n->kids, kids, cnt * sizeof(*kids));
        free(kids);
        n->n = map ? cnt / 2 : cnt;
        if (ai != SIZE_MAX)
            y->anchors[ai].weight = y->expanded - before;
        break;
    }
    default:
        keel_diag_error(y->diag, y->file, (int)ev->start_mark.line + 1 + y->line_off,
                        (int)ev->start_mark.column + 1 + y->col_off, "unexpected YAML event");
        break;
    }
    y->depth--;
    return n;
}

int keel_yaml_parse(struct keel_config_arena *a, const char *file, const char *data, size_t len, int line_off,
                    int col_off, struct keel_ynode ***docs, struct keel_diag *diag)
{
    struct yparse y = { .a = a, .file = file, .data = data, .len = len, .line_off = line_off,
                        .col_off = col_off, .diag = diag };
    y.budget = len < (YAML_EXPAND_MAX - YAML_EXPAND_BASE) / YAML_EXPAND_PER_BYTE
                   ? YAML_EXPAND_BASE + YAML_EXPAND_PER_BYTE * len
                   : YAML_EXPAND_MAX;
    yaml_parser_initialize(&y.p);
    yaml_parser_set_input_string(&y.p, (const unsigned char *)data, len);
    struct keel_ynode **out = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    bool in_doc = false;
    struct keel_ynode *root = NULL;
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&y.p, &ev)) {
            syntax_error(&y);
            rc = -1;
            break;
        }
        yaml_event_type_t t = ev.type;
        if (t == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        } else if (t == YAML_DOCUMENT_START_EVENT) {
            in_doc = true;
            root = NULL;
            y.n_anchors = 0;
        } else if (t == YAML_DOCUMENT_END_EVENT) {
            if (n == cap) {
                cap = cap ? cap * 2 : 8;
                out = keel_realloc(out, cap * sizeof(*out));
            }
            out[n++] = root;
            in_doc = false;
        } else if (in_doc && t != YAML_STREAM_START_EVENT) {
            root = parse_node(&y, &ev);
            if (root == NULL) {
                yaml_event_delete(&ev);
                rc = -1;
                break;
            }
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&y.p);
    free(y.anchors);
    if (rc < 0) {
        free(out);
        *docs = NULL;
        return -1;
    }
    *docs = keel_config_arena_alloc(a, (n ? n : 1) * sizeof(*out));
    if (n)
        memcpy(*docs, out, n * sizeof(*out));
    free(out);
    return (int)n;
}

const struct keel_ynode *keel_ynode_get(const struct keel_ynode *map, const char *key)
{
    if (map == NULL || map->type != KEEL_YNODE_MAP)
        return NULL;
    for (size_t i = 0; i < map->n; i++) {
        const struct keel_ynode *k = map->kids[2 * i];
        if (k->type == KEEL_YNODE_SCALAR && strcmp(k->str, key) == 0)
            return map->kids[2 * i + 1];
    }
    return NULL;
}

bool keel_ynode_is_null(const struct keel_ynode *n)
{
    return n == NULL || (n->type == KEEL_YNODE_SCALAR && n->style == KEEL_YSTYLE_PLAIN &&
                         (n->len == 0 || !strcmp(n->str, "~") || !strcmp(n->str, "null") || !strcmp(n->str, "Null") ||
                          !strcmp(n->str, "NULL")));
}

const char *keel_ynode_type_name(const struct keel_ynode *n)
{
    if (n == NULL)
        return "nothing";
    switch (n->type) {
    case KEEL_YNODE_MAP: return "a mapping";
    case KEEL_YNODE_SEQ: return "a list";
    default: return keel_ynode_is_null(n) ? "null" : "a scalar";
    }
}
