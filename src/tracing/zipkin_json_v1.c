/* Zipkin v1 JSON (POST /api/v1/spans, what Istio <= 1.4's Envoy sends), converted to v2
 * spans the way Zipkin's V1SpanConverter does: the core annotations cs/cr, sr/ss, ms, mr
 * give the kind, timestamp, duration and local endpoint; a v1 span carrying both the
 * client and the server side becomes two v2 spans, the server one `shared`; the address
 * annotations ca/sa/ma give the remote endpoint; other binary annotations become tags and
 * other annotations stay annotations, each on the side whose service recorded it. */
#include "tracing/zipkin_json.h"

#include "core/alloc.h"
#include "core/err.h"
#include "tracing/zipkin_json_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum core { CORE_CS, CORE_CR, CORE_SR, CORE_SS, CORE_MS, CORE_MR, CORE_N };
static const char *const core_names[CORE_N] = { "cs", "cr", "sr", "ss", "ms", "mr" };
enum addr { ADDR_CA, ADDR_SA, ADDR_MA, ADDR_N };
static const char *const addr_names[ADDR_N] = { "ca", "sa", "ma" };

struct event {
    int64_t ts;
    bool seen, has_ep;
    struct keel_zipkin_endpoint ep;
};

struct v1 {
    struct event core[CORE_N];
    struct event addr[ADDR_N];
    struct keel_zipkin_endpoint lc; /* the endpoint of an "lc" (local component) tag */
    bool has_lc;
    struct keel_zipkin_annotation *ann;
    const char **ann_service;
    size_t n_ann;
    struct keel_zipkin_tag *tag;
    const char **tag_service;
    size_t n_tag;
};

static int v1_annotations(struct zj_ctx *c, json_object *v, struct v1 *x)
{
    if (v == NULL)
        return 0;
    if (!json_object_is_type(v, json_type_array))
        return zj_fail(c, "annotations must be an array");
    size_t n = json_object_array_length(v);
    if (n > KEEL_ZIPKIN_MAX_ANNOTATIONS)
        return zj_fail(c, "more than %d annotations", KEEL_ZIPKIN_MAX_ANNOTATIONS);
    x->ann = keel_alloc((n + 1) * sizeof(*x->ann));
    x->ann_service = keel_alloc((n + 1) * sizeof(*x->ann_service));
    for (size_t i = 0; i < n; i++) {
        json_object *a = json_object_array_get_idx(v, i);
        char f[64];
        int64_t ts;
        const char *value;
        struct keel_zipkin_endpoint ep;
        bool has_ep;
        if (!json_object_is_type(a, json_type_object))
            return zj_fail(c, "annotations[%zu] must be an object", i);
        snprintf(f, sizeof(f), "annotations[%zu].timestamp", i);
        if (zj_integer(c, f, zj_member(a, "timestamp"), &ts) < 0)
            return KEEL_EINVAL;
        if (ts == 0)
            return zj_fail(c, "incomplete annotation: %s is missing", f);
        snprintf(f, sizeof(f), "annotations[%zu].value", i);
        if (zj_text(c, f, zj_member(a, "value"), &value) < 0)
            return KEEL_EINVAL;
        if (value == NULL)
            return zj_fail(c, "incomplete annotation: %s is missing", f);
        snprintf(f, sizeof(f), "annotations[%zu].endpoint", i);
        if (zj_endpoint(c, f, zj_member(a, "endpoint"), &ep, &has_ep) < 0)
            return KEEL_EINVAL;
        int k = 0;
        while (k < CORE_N && strcmp(value, core_names[k]) != 0)
            k++;
        if (k < CORE_N) {
            x->core[k] = (struct event){ ts, true, has_ep, ep };
            continue;
        }
        x->ann[x->n_ann] = (struct keel_zipkin_annotation){ ts, value };
        x->ann_service[x->n_ann++] = has_ep ? ep.service : NULL;
    }
    return 0;
}

static int v1_binary(struct zj_ctx *c, json_object *v, struct v1 *x)
{
    if (v == NULL)
        return 0;
    if (!json_object_is_type(v, json_type_array))
        return zj_fail(c, "binaryAnnotations must be an array");
    size_t n = json_object_array_length(v);
    if (n > KEEL_ZIPKIN_MAX_TAGS)
        return zj_fail(c, "more than %d binaryAnnotations", KEEL_ZIPKIN_MAX_TAGS);
    x->tag = keel_alloc((n + 1) * sizeof(*x->tag));
    x->tag_service = keel_alloc((n + 1) * sizeof(*x->tag_service));
    for (size_t i = 0; i < n; i++) {
        json_object *b = json_object_array_get_idx(v, i), *val;
        char f[64];
        const char *key;
        struct keel_zipkin_endpoint ep;
        bool has_ep;
        if (!json_object_is_type(b, json_type_object))
            return zj_fail(c, "binaryAnnotations[%zu] must be an object", i);
        snprintf(f, sizeof(f), "binaryAnnotations[%zu].key", i);
        if (zj_text(c, f, zj_member(b, "key"), &key) < 0)
            return KEEL_EINVAL;
        if (key == NULL)
            return zj_fail(c, "%s is missing", f);
        snprintf(f, sizeof(f), "binaryAnnotations[%zu].endpoint", i);
        if (zj_endpoint(c, f, zj_member(b, "endpoint"), &ep, &has_ep) < 0)
            return KEEL_EINVAL;
        snprintf(f, sizeof(f), "binaryAnnotations[%zu].value", i);
        if ((val = zj_member(b, "value")) == NULL)
            return zj_fail(c, "%s is missing", f);
        int k = 0;
        while (k < ADDR_N && strcmp(key, addr_names[k]) != 0)
            k++;
        if (k < ADDR_N && json_object_is_type(val, json_type_boolean)) {
            if (json_object_get_boolean(val) && has_ep)
                x->addr[k] = (struct event){ 0, true, true, ep };
            continue;
        }
        const char *sv;
        if (json_object_is_type(val, json_type_string)) {
            if (zj_text(c, f, val, &sv) < 0)
                return KEEL_EINVAL;
            sv = sv != NULL ? sv : "";
        } else if (json_object_is_type(val, json_type_boolean) ||
                   json_object_is_type(val, json_type_int) ||
                   json_object_is_type(val, json_type_double)) {
            sv = json_object_get_string(val); /* I64, DOUBLE, BOOL types as Zipkin prints them */
        } else {
            return zj_fail(c, "%s must be a string, number or boolean", f);
        }
        if (!strcmp(key, "lc") && has_ep && !x->has_lc) {
            x->lc = ep;
            x->has_lc = true;
        }
        x->tag[x->n_tag] = (struct keel_zipkin_tag){ key, sv };
        x->tag_service[x->n_tag++] = has_ep ? ep.service : NULL;
    }
    return 0;
}

static void set_local(struct keel_zipkin_span *s, const struct event *a, const struct event *b)
{
    const struct event *e = a->seen && a->has_ep ? a : b->seen && b->has_ep ? b : NULL;
    if (e != NULL) {
        s->local = e->ep;
        s->has_local = true;
    }
}

static void set_remote(struct keel_zipkin_span *s, const struct event *a)
{
    if (a->seen) {
        s->remote = a->ep;
        s->has_remote = true;
    }
}

/* start/end from the side's annotations, else (one side only) the span's own fields */
static void set_times(struct keel_zipkin_span *s, const struct keel_zipkin_span *base,
                      const struct event *start, const struct event *end, bool alone)
{
    s->timestamp = start->seen ? start->ts : alone ? base->timestamp : 0;
    if (alone && base->timestamp != 0 && base->duration != 0) {
        s->timestamp = base->timestamp;
        s->duration = base->duration;
    } else if (start->seen && end->seen && end->ts > start->ts) {
        s->duration = end->ts - start->ts;
    }
}

static bool same_service(const struct keel_zipkin_span *s, const char *service)
{
    return service != NULL && s->local.service != NULL && !strcasecmp(s->local.service, service);
}

static int v1_span(struct zj_ctx *c, json_object *o, struct keel_zipkin_list *out)
{
    struct keel_zipkin_span base, sp[2];
    struct v1 x;
    memset(&base, 0, sizeof(base));
    memset(&x, 0, sizeof(x));
    int rc = KEEL_EINVAL;
    size_t n = 0;
    if (!json_object_is_type(o, json_type_object)) {
        zj_fail(c, "a span must be an object");
        goto out;
    }
    if (zj_ids(c, o, &base) < 0 || zj_text(c, "name", zj_member(o, "name"), &base.name) < 0 ||
        zj_integer(c, "timestamp", zj_member(o, "timestamp"), &base.timestamp) < 0 ||
        zj_integer(c, "duration", zj_member(o, "duration"), &base.duration) < 0 ||
        zj_boolean(c, "debug", zj_member(o, "debug"), &base.debug) < 0 ||
        v1_annotations(c, zj_member(o, "annotations"), &x) < 0 ||
        v1_binary(c, zj_member(o, "binaryAnnotations"), &x) < 0)
        goto out;
    bool client = x.core[CORE_CS].seen || x.core[CORE_CR].seen;
    bool server = x.core[CORE_SR].seen || x.core[CORE_SS].seen;
    if (client) {
        sp[n] = base;
        sp[n].kind = KEEL_ZIPKIN_KIND_CLIENT;
        sp[n].timestamp = sp[n].duration = 0;
        set_local(&sp[n], &x.core[CORE_CS], &x.core[CORE_CR]);
        set_remote(&sp[n], &x.addr[ADDR_SA]);
        set_times(&sp[n], &base, &x.core[CORE_CS], &x.core[CORE_CR], !server);
        n++;
    }
    if (server) {
        sp[n] = base;
        sp[n].kind = KEEL_ZIPKIN_KIND_SERVER;
        sp[n].timestamp = sp[n].duration = 0;
        sp[n].shared = client;
        set_local(&sp[n], &x.core[CORE_SR], &x.core[CORE_SS]);
        set_remote(&sp[n], &x.addr[ADDR_CA]);
        set_times(&sp[n], &base, &x.core[CORE_SR], &x.core[CORE_SS], !client);
        n++;
    }
    if (!client && !server) {
        sp[0] = base;
        enum core k = x.core[CORE_MS].seen ? CORE_MS : CORE_MR;
        if (x.core[k].seen) {
            sp[0].kind = k == CORE_MS ? KEEL_ZIPKIN_KIND_PRODUCER : KEEL_ZIPKIN_KIND_CONSUMER;
            set_local(&sp[0], &x.core[k], &x.core[k]);
            set_remote(&sp[0], &x.addr[ADDR_MA]);
            if (sp[0].timestamp == 0)
                sp[0].timestamp = x.core[k].ts;
        } else if (x.has_lc) {
            sp[0].local = x.lc;
            sp[0].has_local = true;
        }
        n = 1;
    }
    /* annotations and tags go to the side whose service recorded them, else the first */
    for (size_t i = 0; i < n; i++) {
        struct keel_zipkin_annotation *a = keel_alloc((x.n_ann + 1) * sizeof(*a));
        struct keel_zipkin_tag *t = keel_alloc((x.n_tag + 1) * sizeof(*t));
        size_t na = 0, nt = 0;
        for (size_t k = 0; k < x.n_ann; k++) {
            size_t to = n == 2 && same_service(&sp[1], x.ann_service[k]) ? 1 : 0;
            if (to == i)
                a[na++] = x.ann[k];
        }
        for (size_t k = 0; k < x.n_tag; k++) {
            size_t to = n == 2 && same_service(&sp[1], x.tag_service[k]) ? 1 : 0;
            if (to == i)
                t[nt++] = x.tag[k];
        }
        sp[i].annotations = a;
        sp[i].n_annotations = na;
        sp[i].tags = t;
        sp[i].n_tags = nt;
        zj_push(out, &sp[i]);
        free(a);
        free(t);
    }
    rc = 0;
out:
    free(x.ann);
    free(x.ann_service);
    free(x.tag);
    free(x.tag_service);
    return rc;
}

int keel_zipkin_json_parse_v1(const char *p, size_t len, struct keel_zipkin_list *out, char *err,
                              size_t errcap)
{
    return zj_parse_list(p, len, out, err, errcap, v1_span);
}
