/* The Mixer stdio adapter (mixer-config.md §6.3-6.4): one JSON (or console) line per
 * instance into the shard's output buffer for the handler's stream. */
#include "core/alloc.h"
#include "core/json.h"
#include "telemetry/engine_int.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static const struct keel_time zero_time = { -62135596800LL, 0 }; /* 0001-01-01T00:00:00Z */

void tel_stdio_plan(struct keel_telemetry *t, struct tel_stdio *s, const struct keel_config_stdio *cfg,
                    struct keel_diag *d)
{
    (void)t;
    s->cfg = cfg;
    s->json = cfg->output_as_json;
    s->stream = cfg->log_stream == KEEL_CONFIG_STREAM_STDERR ? KEEL_TELEMETRY_STDERR : KEEL_TELEMETRY_STDOUT;
    if ((cfg->log_stream == KEEL_CONFIG_STREAM_FILE || cfg->log_stream == KEEL_CONFIG_STREAM_ROTATED_FILE) && d)
        keel_diag_warn(d, cfg->obj.pos.file, cfg->obj.pos.line, cfg->obj.pos.col,
                       "stdio handler \"%s\": logStream FILE is not supported yet; lines go to stdout",
                       cfg->obj.fqn);
}

static int level_of(const struct keel_config_stdio *cfg, struct keel_str sev)
{
    for (size_t i = 0; i < cfg->n_severity_levels; i++) {
        const char *s = cfg->severity_levels[i].severity;
        if (s && strlen(s) == sev.len && !memcmp(s, sev.p, sev.len))
            return cfg->severity_levels[i].level;
    }
    return KEEL_CONFIG_LEVEL_INFO;
}

/* Appends without a call when there is room (every line after the buffer's first fill). */
static inline void put(struct keel_buf *b, const void *p, size_t n)
{
    if (b->cap - b->wpos < n) {
        keel_buf_append(b, p, n);
        return;
    }
    memcpy(b->data + b->wpos, p, n);
    b->wpos += n;
}

static inline char *cpy(char *d, const void *p, size_t n)
{
    memcpy(d, p, n);
    return d + n;
}

#define TIME_MAX 64 /* keel_value_fmt_timestamp never writes more */

static char *put_time(char *d, struct keel_time tm)
{
    size_t n = keel_value_fmt_timestamp(tm, d, TIME_MAX);
    return d + (n < TIME_MAX ? n : TIME_MAX);
}

/* The head in one reserve and direct stores. */
static void put_head(const struct tel_stdio *s, struct keel_buf *b, int level, struct keel_time tm,
                     struct keel_str fqn)
{
    static const struct keel_str level_names[] = { { "info", 4 }, { "warn", 4 }, { "error", 5 } };
    struct keel_str lv = level_names[level >= 0 && level <= 2 ? level : 0];
    keel_buf_reserve(b, 48 + lv.len + TIME_MAX + fqn.len * KEEL_JSON_ESC_MAX);
    char *d = b->data + b->wpos;
    if (s->json) {
        d = cpy(d, "{\"level\":\"", 10);
        d = cpy(d, lv.p, lv.len);
        d = cpy(d, "\",\"time\":\"", 10);
        d = put_time(d, tm);
        d = cpy(d, "\",\"instance\":\"", 14);
        d += keel_json_escape(d, fqn.p, fqn.len); /* config names, escaped all the same */
        *d++ = '"';
    } else {
        d = put_time(d, tm);
        *d++ = '\t';
        d = cpy(d, lv.p, lv.len);
        *d++ = '\t';
        d = cpy(d, fqn.p, fqn.len);
        d = cpy(d, "\t{", 2);
    }
    b->wpos = (size_t)(d - b->data);
}

/* one field: JSON `,"k":v`, console `"k": v` with ", " between fields */
static int put_field(const struct tel_stdio *s, struct keel_buf *b, size_t idx, const struct tel_named *f,
                     const struct keel_attr_bag *bag)
{
    struct keel_value v;
    if (keel_expr_eval(f->expr, bag, &v, NULL) < 0)
        return -1;
    if (!s->json && idx)
        put(b, ", ", 2);
    struct keel_str k = s->json ? f->key_json : f->key_console;
    put(b, k.p, k.len);
    keel_value_format_json(&v, b);
    return 0;
}

static void put_tail(const struct tel_stdio *s, struct keel_telemetry_output *o)
{
    put(&o->buf, "}\n", 2);
    o->lines++;
}

int tel_stdio_log(const struct tel_stdio *s, struct keel_telemetry_shard *sh, const struct tel_instance *in,
                  const struct keel_attr_bag *bag)
{
    const struct keel_config_stdio *cfg = s->cfg;
    struct keel_value v;
    int level = KEEL_CONFIG_LEVEL_INFO;
    if (in->severity_is_const) {
        level = level_of(cfg, in->severity_const);
    } else if (in->severity) {
        if (keel_expr_eval(in->severity, bag, &v, NULL) < 0)
            return -1;
        if (v.type == KEEL_VALUE_STRING)
            level = level_of(cfg, v.u.s);
    }
    if (level < cfg->output_level)
        return 0;
    struct keel_time tm = zero_time;
    if (in->timestamp_attr >= 0) {
        const struct keel_value *tv = keel_attr_bag_get(bag, in->timestamp_attr);
        if (!tv || tv->type != KEEL_VALUE_TIMESTAMP)
            return -1;
        tm = tv->u.t;
    } else if (in->timestamp) {
        if (keel_expr_eval(in->timestamp, bag, &v, NULL) < 0 || v.type != KEEL_VALUE_TIMESTAMP)
            return -1;
        tm = v.u.t;
    }
    struct keel_telemetry_output *o = &sh->out[s->stream];
    size_t start = o->buf.wpos;
    put_head(s, &o->buf, level, tm, in->fqn);
    for (size_t i = 0; i < in->n_vars; i++)
        if (put_field(s, &o->buf, i, &in->vars[i], bag) < 0) {
            o->buf.wpos = start; /* the whole instance is dropped */
            return -1;
        }
    put_tail(s, o);
    return 0;
}

int tel_stdio_metric(const struct tel_stdio *s, struct keel_telemetry_shard *sh, const struct tel_instance *in,
                     const struct keel_attr_bag *bag)
{
    const struct keel_config_stdio *cfg = s->cfg;
    if (cfg->metric_level < cfg->output_level)
        return 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct keel_time tm = { ts.tv_sec, (int32_t)ts.tv_nsec };
    struct keel_telemetry_output *o = &sh->out[s->stream];
    size_t start = o->buf.wpos;
    put_head(s, &o->buf, cfg->metric_level, tm, in->fqn);
    struct keel_value v;
    if (!in->value || keel_expr_eval(in->value, bag, &v, NULL) < 0) {
        o->buf.wpos = start;
        return -1;
    }
    keel_buf_append_str(&o->buf, s->json ? ",\"value\":" : "\"value\": ");
    keel_value_format_json(&v, &o->buf);
    for (size_t i = 0; i < in->n_dims; i++)
        if (put_field(s, &o->buf, i + 1, &in->dims[i], bag) < 0) {
            o->buf.wpos = start;
            return -1;
        }
    put_tail(s, o);
    return 0;
}
