/* Access-log format compiler: Envoy format strings (and Istio's JSON dictionaries) become
 * an op list once, at config time; every name, header and constant is resolved here so the
 * renderer only runs (STYLE.md habit 5). */
#include "telemetry/accesslog.h"

#include "core/alloc.h"
#include "core/json.h"
#include "telemetry/accesslog_int.h"

#include <ctype.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char keel_accesslog_istio_text_format[] =
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" "
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    "\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" "
    "\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% "
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% "
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

/* Istio's current default JSON dictionary (spec §2.3), in Istio's order. */
static const char *const istio_json[][2] = {
    { "start_time", "%START_TIME%" },
    { "route_name", "%ROUTE_NAME%" },
    { "method", "%REQ(:METHOD)%" },
    { "path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%" },
    { "protocol", "%PROTOCOL%" },
    { "response_code", "%RESPONSE_CODE%" },
    { "response_flags", "%RESPONSE_FLAGS%" },
    { "response_code_details", "%RESPONSE_CODE_DETAILS%" },
    { "connection_termination_details", "%CONNECTION_TERMINATION_DETAILS%" },
    { "bytes_received", "%BYTES_RECEIVED%" },
    { "bytes_sent", "%BYTES_SENT%" },
    { "duration", "%DURATION%" },
    { "upstream_service_time", "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%" },
    { "x_forwarded_for", "%REQ(X-FORWARDED-FOR)%" },
    { "user_agent", "%REQ(USER-AGENT)%" },
    { "request_id", "%REQ(X-REQUEST-ID)%" },
    { "authority", "%REQ(:AUTHORITY)%" },
    { "upstream_host", "%UPSTREAM_HOST%" },
    { "upstream_cluster", "%UPSTREAM_CLUSTER_RAW%" },
    { "upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%" },
    { "downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%" },
    { "downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%" },
    { "requested_server_name", "%REQUESTED_SERVER_NAME%" },
    { "upstream_transport_failure_reason", "%UPSTREAM_TRANSPORT_FAILURE_REASON%" },
};

/* ---- the operator table (spec §1.2): one row per operator name ---- */

enum al_arg { ARG_NONE, ARG_OPT, ARG_REQ };

/* special compile-time handling beyond the row's id */
enum al_special { SP_NONE, SP_HOSTNAME, SP_ENV, SP_HEADER, SP_PATH, SP_QUERY, SP_CEL };

struct al_opdef {
    const char *name;
    uint8_t id;
    uint8_t arg;
    uint8_t flags;
    uint8_t part;
    uint16_t field;
    uint8_t special;
};

#define R(f) offsetof(struct keel_access_record, f)
#define H AL_F_HTTP_ONLY
#define Z AL_F_TCP_ZERO
/* values keel writes from a fixed alphabet: socket addresses (keel_addr_format), protocol
 * names, the default time layout, flag names, uuids */
#define C AL_F_CLEAN

static const struct al_opdef opdefs[] = {
    { "START_TIME", AL_START_TIME, ARG_OPT, C, 0, 0, SP_NONE },
    { "REQ", AL_REQ, ARG_REQ, H, 0, 0, SP_HEADER },
    { "REQ_WITHOUT_QUERY", AL_REQ, ARG_REQ, H | AL_F_NOQUERY, 0, 0, SP_HEADER },
    { "PATH", AL_REQ, ARG_OPT, H, 0, 0, SP_PATH },
    { "QUERY_PARAM", AL_QUERY_PARAM, ARG_REQ, H, 0, 0, SP_QUERY },
    { "UNIQUE_ID", AL_UNIQUE_ID, ARG_NONE, C, 0, 0, SP_NONE },
    { "CEL", AL_CEL, ARG_REQ, 0, 0, 0, SP_CEL },
    { "UPSTREAM_HOST_NAME", AL_STRFIELD, ARG_NONE, C, 0, R(upstream_host), SP_NONE },
    { "UPSTREAM_HOST_NAME_WITHOUT_PORT", AL_ADDR, ARG_NONE, C, AL_PART_NOPORT, R(upstream_host), SP_NONE },
    { "UPSTREAM_CONNECTION_ID", AL_UNSET, ARG_NONE, 0, 0, 0, SP_NONE },
    { "METADATA", AL_UNSET, ARG_REQ, 0, 0, 0, SP_NONE },
    { "ACCESS_LOG_TYPE", AL_UNSET, ARG_NONE, 0, 0, 0, SP_NONE },
    { "RESP", AL_RESP, ARG_REQ, H, 0, 0, SP_HEADER },
    { "TRAILER", AL_UNSET, ARG_REQ, H, 0, 0, SP_NONE },
    { "PROTOCOL", AL_STRFIELD, ARG_NONE, H | C, 0, R(protocol), SP_NONE },
    { "UPSTREAM_PROTOCOL", AL_UPSTREAM_PROTOCOL, ARG_NONE, H, 0, 0, SP_NONE },
    { "RESPONSE_CODE", AL_RESPONSE_CODE, ARG_NONE, Z, 0, 0, SP_NONE },
    { "RESPONSE_CODE_DETAILS", AL_STRFIELD, ARG_NONE, H, 0, R(code_details), SP_NONE },
    { "CONNECTION_TERMINATION_DETAILS", AL_STRFIELD, ARG_NONE, 0, 0, R(termination_details), SP_NONE },
    { "RESPONSE_FLAGS", AL_FLAGS, ARG_NONE, C, 0, 0, SP_NONE },
    { "RESPONSE_FLAGS_LONG", AL_FLAGS, ARG_NONE, C, 1, 0, SP_NONE },
    { "BYTES_RECEIVED", AL_U64FIELD, ARG_NONE, 0, 0, R(bytes_received), SP_NONE },
    { "BYTES_SENT", AL_U64FIELD, ARG_NONE, 0, 0, R(bytes_sent), SP_NONE },
    { "REQUEST_HEADERS_BYTES", AL_U64FIELD, ARG_NONE, Z, 0, R(request_headers_bytes), SP_NONE },
    { "RESPONSE_HEADERS_BYTES", AL_U64FIELD, ARG_NONE, Z, 0, R(response_headers_bytes), SP_NONE },
    { "RESPONSE_TRAILERS_BYTES", AL_ZERO, ARG_NONE, 0, 0, 0, SP_NONE },
    { "DOWNSTREAM_HEADER_BYTES_RECEIVED", AL_U64FIELD, ARG_NONE, Z, 0, R(request_headers_bytes), SP_NONE },
    { "DOWNSTREAM_HEADER_BYTES_SENT", AL_UNSET, ARG_NONE, 0, 0, 0, SP_NONE },
    { "DOWNSTREAM_WIRE_BYTES_SENT", AL_UNSET, ARG_NONE, 0, 0, 0, SP_NONE },
    { "DOWNSTREAM_WIRE_BYTES_RECEIVED", AL_UNSET, ARG_NONE, 0, 0, 0, SP_NONE },
    { "UPSTREAM_WIRE_BYTES_SENT", AL_UNSET, ARG_NONE, 0, 0, 0, SP_NONE },
    { "UPSTREAM_WIRE_BYTES_RECEIVED", AL_UNSET, ARG_NONE, 0, 0, 0, SP_NONE },
    { "UPSTREAM_HEADER_BYTES_SENT", AL_UNSET, ARG_NONE, 0, 0, 0, SP_NONE },
    { "UPSTREAM_HEADER_BYTES_RECEIVED", AL_UNSET, ARG_NONE, 0, 0, 0, SP_NONE },
    { "DURATION", AL_DURATION, ARG_NONE, 0, 0, R(duration_us), SP_NONE },
    { "REQUEST_DURATION", AL_DURATION, ARG_NONE, H, 0, R(request_duration_us), SP_NONE },
    { "REQUEST_TX_DURATION", AL_DURATION, ARG_NONE, H, 0, R(request_tx_duration_us), SP_NONE },
    { "RESPONSE_DURATION", AL_DURATION, ARG_NONE, H, 0, R(response_duration_us), SP_NONE },
    { "RESPONSE_TX_DURATION", AL_DURATION, ARG_NONE, H, 0, R(response_tx_duration_us), SP_NONE },
    { "UPSTREAM_HOST", AL_STRFIELD, ARG_NONE, C, 0, R(upstream_host), SP_NONE },
    { "UPSTREAM_CLUSTER", AL_STRFIELD, ARG_NONE, 0, 0, R(upstream_cluster), SP_NONE },
    { "UPSTREAM_CLUSTER_RAW", AL_STRFIELD, ARG_NONE, 0, 0, R(upstream_cluster), SP_NONE },
    { "UPSTREAM_LOCAL_ADDRESS", AL_ADDR, ARG_NONE, C, AL_PART_FULL, R(upstream_local), SP_NONE },
    { "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", AL_ADDR, ARG_NONE, C, AL_PART_NOPORT, R(upstream_local), SP_NONE },
    { "UPSTREAM_LOCAL_PORT", AL_ADDR, ARG_NONE, C, AL_PART_PORT, R(upstream_local), SP_NONE },
    { "UPSTREAM_REMOTE_ADDRESS", AL_ADDR, ARG_NONE, C, AL_PART_FULL, R(upstream_host), SP_NONE },
    { "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", AL_ADDR, ARG_NONE, C, AL_PART_NOPORT, R(upstream_host), SP_NONE },
    { "UPSTREAM_REMOTE_PORT", AL_ADDR, ARG_NONE, C, AL_PART_PORT, R(upstream_host), SP_NONE },
    { "DOWNSTREAM_LOCAL_ADDRESS", AL_ADDR, ARG_NONE, C, AL_PART_FULL, R(downstream_local), SP_NONE },
    { "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", AL_ADDR, ARG_NONE, C, AL_PART_NOPORT, R(downstream_local), SP_NONE },
    { "DOWNSTREAM_LOCAL_PORT", AL_ADDR, ARG_NONE, C, AL_PART_PORT, R(downstream_local), SP_NONE },
    { "DOWNSTREAM_DIRECT_LOCAL_ADDRESS", AL_ADDR, ARG_NONE, C, AL_PART_FULL, R(downstream_local), SP_NONE },
    { "DOWNSTREAM_DIRECT_LOCAL_ADDRESS_WITHOUT_PORT", AL_ADDR, ARG_NONE, C, AL_PART_NOPORT, R(downstream_local), SP_NONE },
    { "DOWNSTREAM_DIRECT_LOCAL_PORT", AL_ADDR, ARG_NONE, C, AL_PART_PORT, R(downstream_local), SP_NONE },
    { "DOWNSTREAM_REMOTE_ADDRESS", AL_ADDR, ARG_NONE, C, AL_PART_FULL, R(downstream_remote), SP_NONE },
    { "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", AL_ADDR, ARG_NONE, C, AL_PART_NOPORT, R(downstream_remote), SP_NONE },
    { "DOWNSTREAM_REMOTE_PORT", AL_ADDR, ARG_NONE, C, AL_PART_PORT, R(downstream_remote), SP_NONE },
    { "DOWNSTREAM_DIRECT_REMOTE_ADDRESS", AL_ADDR, ARG_NONE, C, AL_PART_FULL, R(downstream_remote), SP_NONE },
    { "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT", AL_ADDR, ARG_NONE, C, AL_PART_NOPORT, R(downstream_remote), SP_NONE },
    { "DOWNSTREAM_DIRECT_REMOTE_PORT", AL_ADDR, ARG_NONE, C, AL_PART_PORT, R(downstream_remote), SP_NONE },
    { "ROUTE_NAME", AL_STRFIELD, ARG_NONE, H, 0, R(route_name), SP_NONE },
    { "CONNECTION_ID", AL_U64FIELD, ARG_NONE, 0, 0, R(connection_id), SP_NONE },
    { "UPSTREAM_REQUEST_ATTEMPT_COUNT", AL_ATTEMPTS, ARG_NONE, 0, 0, 0, SP_NONE },
    { "HOSTNAME", AL_CONST, ARG_NONE, 0, 0, 0, SP_HOSTNAME },
    { "ENVIRONMENT", AL_CONST, ARG_REQ, 0, 0, 0, SP_ENV },
    /* known to Envoy, not (yet) answerable from a keel record: always unset */
    { "UPSTREAM_TRANSPORT_FAILURE_REASON", AL_UNSET, ARG_NONE, 0, 0, 0, SP_NONE },
    { "REQUESTED_SERVER_NAME", AL_UNSET, ARG_NONE, 0, 0, 0, SP_NONE },
    { "VIRTUAL_CLUSTER_NAME", AL_UNSET, ARG_NONE, 0, 0, 0, SP_NONE },
    { "LOCAL_REPLY_BODY", AL_UNSET, ARG_NONE, 0, 0, 0, SP_NONE },
    { "FILTER_CHAIN_NAME", AL_UNSET, ARG_NONE, 0, 0, 0, SP_NONE },
    { "GRPC_STATUS", AL_STRFIELD, ARG_OPT, H, 0, R(grpc_status_name), SP_NONE },
    { "GRPC_STATUS_NUMBER", AL_STRFIELD, ARG_NONE, H, 0, R(grpc_status), SP_NONE },
    { "DYNAMIC_METADATA", AL_UNSET, ARG_REQ, 0, 0, 0, SP_NONE },
    { "CLUSTER_METADATA", AL_UNSET, ARG_REQ, 0, 0, 0, SP_NONE },
    { "UPSTREAM_METADATA", AL_UNSET, ARG_REQ, 0, 0, 0, SP_NONE },
    { "FILTER_STATE", AL_UNSET, ARG_REQ, 0, 0, 0, SP_NONE },
};

#undef R
#undef H
#undef Z
#undef C

/* Envoy operators that cannot apply to keel's connections: refused at load with the
 * reason, rather than printed as "-" forever. (REQUESTED_SERVER_NAME and
 * UPSTREAM_TRANSPORT_FAILURE_REASON stay: Istio's default format names them.) */
static const char NO_TLS[] = "keel has no TLS yet (plaintext HTTP/1.1 and TCP): no certificate, SNI or cipher";
static const struct {
    const char *prefix;
    const char *why;
} refused[] = {
    { "DOWNSTREAM_LOCAL_URI_SAN", NO_TLS }, { "DOWNSTREAM_PEER_", NO_TLS }, { "DOWNSTREAM_LOCAL_SUBJECT", NO_TLS },
    { "DOWNSTREAM_TLS_", NO_TLS }, { "DOWNSTREAM_LOCAL_DNS_SAN", NO_TLS }, { "DOWNSTREAM_LOCAL_IP_SAN", NO_TLS },
    { "UPSTREAM_TLS_", NO_TLS }, { "UPSTREAM_PEER_", NO_TLS }, { "UPSTREAM_LOCAL_SUBJECT", NO_TLS },
    { "UPSTREAM_LOCAL_URI_SAN", NO_TLS }, { "UPSTREAM_LOCAL_DNS_SAN", NO_TLS }, { "TLS_JA3_FINGERPRINT", NO_TLS },
};

static const char *refused_why(const char *name, size_t n)
{
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        size_t pl = strlen(refused[i].prefix);
        bool prefix = refused[i].prefix[pl - 1] == '_';
        if ((prefix ? n >= pl : n == pl) && memcmp(name, refused[i].prefix, pl) == 0)
            return refused[i].why;
    }
    return NULL;
}

/* ---- compiler state ---- */

struct cc {
    struct keel_accesslog_format *f;
    size_t ops_cap, tsegs_cap, arena_cap;
    size_t lit_end;     /* arena_len right after the last op's literal bytes, or SIZE_MAX */
    char hostname[256];
    int have_hostname;
    char *err;
    size_t errlen;
    const char *key;    /* JSON key whose value is being compiled, for messages */
    size_t col_base;    /* column of the value's first byte in the JSON text (0: text) */
};

static int fail(struct cc *c, size_t col, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(struct cc *c, size_t col, const char *fmt, ...)
{
    if (c->err == NULL || c->errlen == 0)
        return -1;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->key != NULL)
        snprintf(c->err, c->errlen, "access log format: key \"%s\": column %zu: %s", c->key,
                 c->col_base + col, msg);
    else
        snprintf(c->err, c->errlen, "access log format: column %zu: %s", c->col_base + col, msg);
    return -1;
}

static uint32_t arena_put(struct cc *c, const void *p, size_t n)
{
    struct keel_accesslog_format *f = c->f;
    if (f->arena_len + n + 1 > c->arena_cap) {
        size_t cap = c->arena_cap ? c->arena_cap : 256;
        while (cap < f->arena_len + n + 1)
            cap *= 2;
        f->arena = keel_realloc(f->arena, cap);
        c->arena_cap = cap;
    }
    uint32_t off = (uint32_t)f->arena_len;
    if (n > 0)
        memcpy(f->arena + off, p, n);
    f->arena_len += n;
    return off;
}

static struct al_op *op_new(struct cc *c)
{
    struct keel_accesslog_format *f = c->f;
    if (f->n_ops == c->ops_cap) {
        c->ops_cap = c->ops_cap ? c->ops_cap * 2 : 32;
        f->ops = keel_realloc(f->ops, c->ops_cap * sizeof(*f->ops));
    }
    struct al_op *o = &f->ops[f->n_ops++];
    memset(o, 0, sizeof(*o));
    c->lit_end = SIZE_MAX;
    return o;
}

/* Literal bytes; merged into the previous op when that is a literal ending right here. */
static void emit_lit(struct cc *c, const char *p, size_t n)
{
    struct keel_accesslog_format *f = c->f;
    if (n == 0)
        return;
    if (f->n_ops > 0 && c->lit_end == f->arena_len && f->ops[f->n_ops - 1].id == AL_LIT) {
        arena_put(c, p, n);
        f->ops[f->n_ops - 1].len += (uint32_t)n;
        c->lit_end = f->arena_len;
        return;
    }
    struct al_op *o = op_new(c);
    o->id = AL_LIT;
    o->off = arena_put(c, p, n);
    o->len = (uint32_t)n;
    c->lit_end = f->arena_len;
}

/* JSON string escaping for text fixed at compile time (keys, literals inside values):
 * the same escaper as the values (core/json.c). */
static void emit_lit_json(struct cc *c, const char *p, size_t n)
{
    char small[256];
    char *tmp = n * KEEL_JSON_ESC_MAX <= sizeof(small) ? small : keel_alloc(n * KEEL_JSON_ESC_MAX);
    emit_lit(c, tmp, keel_json_escape(tmp, p, n));
    if (tmp != small)
        free(tmp);
}

/* ---- one operator ---- */

static const struct al_opdef *opdef_find(const char *name, size_t n)
{
    for (size_t i = 0; i < sizeof(opdefs) / sizeof(opdefs[0]); i++)
        if (strlen(opdefs[i].name) == n && memcmp(opdefs[i].name, name, n) == 0)
            return &opdefs[i];
    return NULL;
}

/* A parsed "%NAME(ARG):N%" before resolution. */
struct opsyn {
    const char *name;
    size_t name_len;
    const char *arg;    /* NULL: no parentheses */
    size_t arg_len;
    int has_trunc;
    uint32_t trunc;
    size_t end;         /* index just past the closing '%' */
};

/* The ')' closing a %CEL(...)% argument that starts at s[k]: an expression has its own
 * parentheses and string literals (which may hold parentheses), so the argument ends at
 * the first ')' outside both. len when there is none. */
static size_t cel_arg_end(const char *s, size_t len, size_t k)
{
    int depth = 0;
    char quote = 0;
    for (; k < len; k++) {
        char ch = s[k];
        if (quote != 0) {
            if (ch == '\\' && k + 1 < len)
                k++;
            else if (ch == quote)
                quote = 0;
        } else if (ch == '"' || ch == '\'') {
            quote = ch;
        } else if (ch == '(' || ch == '[' || ch == '{') {
            depth++;
        } else if (ch == ')' || ch == ']' || ch == '}') {
            if (depth == 0)
                return ch == ')' ? k : len;
            depth--;
        }
    }
    return len;
}

/* Parse the operator whose '%' is at s[i]. Pure syntax; 0 or -1 with the error set. */
static int parse_opsyn(struct cc *c, const char *s, size_t len, size_t i, struct opsyn *o)
{
    size_t j = i + 1;
    memset(o, 0, sizeof(*o));
    o->name = s + j;
    while (j < len && (isupper((unsigned char)s[j]) || isdigit((unsigned char)s[j]) || s[j] == '_'))
        j++;
    o->name_len = (size_t)(s + j - o->name);
    if (o->name_len == 0) {
        if (j >= len)
            return fail(c, i + 1, "'%%' at end of format (write %%%% for a literal '%%')");
        return fail(c, i + 1, "expected an operator name after '%%', got '%c' (write %%%% for a literal '%%')",
                    isprint((unsigned char)s[j]) ? s[j] : '?');
    }
    if (j < len && s[j] == '(') {
        size_t k = j + 1;
        if (o->name_len == 3 && memcmp(o->name, "CEL", 3) == 0)
            k = cel_arg_end(s, len, k);
        else
            while (k < len && s[k] != ')')
                k++;
        if (k >= len)
            return fail(c, j + 1, "unterminated '(' in operator %.*s", (int)o->name_len, o->name);
        o->arg = s + j + 1;
        o->arg_len = k - j - 1;
        j = k + 1;
    }
    if (j < len && s[j] == ':') {
        size_t k = j + 1;
        uint64_t v = 0;
        while (k < len && isdigit((unsigned char)s[k])) {
            v = v * 10 + (uint64_t)(s[k] - '0');
            if (v > UINT32_MAX)
                return fail(c, j + 1, "truncation length too large in operator %.*s", (int)o->name_len,
                            o->name);
            k++;
        }
        if (k == j + 1)
            return fail(c, j + 1, "expected a length after ':' in operator %.*s", (int)o->name_len, o->name);
        o->has_trunc = 1;
        o->trunc = (uint32_t)v;
        j = k;
    }
    if (j >= len || s[j] != '%')
        return fail(c, i + 1, "operator %.*s is not closed by '%%'", (int)o->name_len, o->name);
    o->end = j + 1;
    return 0;
}

static int pseudo_of(const char *p, size_t n, int resp)
{
    static const struct { const char *name; int id; int resp; } ps[] = {
        { ":method", AL_PS_METHOD, 0 },     { ":path", AL_PS_PATH, 0 },
        { ":authority", AL_PS_AUTHORITY, 0 }, { ":scheme", AL_PS_SCHEME, 0 },
        { ":status", AL_PS_STATUS, 1 },
    };
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++)
        if (ps[i].resp == resp && strlen(ps[i].name) == n && strncasecmp(ps[i].name, p, n) == 0)
            return ps[i].id;
    return AL_PS_NONE;
}

static int add_header_name(struct cc *c, struct al_op *o, const char *p, size_t n, size_t col)
{
    char low[256];
    if (n == 0)
        return fail(c, col, "empty header name");
    if (n >= sizeof(low))
        return fail(c, col, "header name too long");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '%' || ch == '?' || (ch == ':' && i > 0))
            return fail(c, col, "invalid character in header name \"%.*s\"", (int)n, p);
        low[i] = (char)tolower(ch);
    }
    int k = o->n_names++;
    o->pseudo[k] = (uint8_t)pseudo_of(low, n, o->id == AL_RESP);
    o->hid[k] = (uint8_t)keel_http_header_id((struct keel_str){ low, n });
    o->noff[k] = arena_put(c, low, n);
    o->nlen[k] = (uint32_t)n;
    return 0;
}

static int compile_header_op(struct cc *c, struct al_op *o, const struct opsyn *s, size_t col)
{
    const char *q = memchr(s->arg, '?', s->arg_len);
    size_t n1 = q ? (size_t)(q - s->arg) : s->arg_len;
    if (add_header_name(c, o, s->arg, n1, col) < 0)
        return -1;
    if (q != NULL && add_header_name(c, o, q + 1, s->arg_len - n1 - 1, col) < 0)
        return -1;
    if (o->id == AL_REQ) {
        static const char orig[] = "x-envoy-original-path", reqid[] = "x-request-id";
        const char *n0 = c->f->arena + o->noff[0];
        /* Envoy reads the path before any rewrite from x-envoy-original-path; alone it
         * falls back to :path, as the Istio formats spell out with '?'. */
        if (o->n_names == 1 && o->nlen[0] == sizeof(orig) - 1 && memcmp(n0, orig, o->nlen[0]) == 0) {
            o->pseudo[1] = AL_PS_PATH;
            o->noff[1] = arena_put(c, ":path", 5);
            o->nlen[1] = 5;
            o->n_names = 2;
        }
        for (int k = 0; k < o->n_names; k++)
            if (o->nlen[k] == sizeof(reqid) - 1 && memcmp(c->f->arena + o->noff[k], reqid, o->nlen[k]) == 0)
                o->flags |= AL_F_REQID;
    }
    return 0;
}

/* Split a START_TIME layout into strftime chunks and the Envoy extensions %f, %Nf, %s. */
static int compile_time_fmt(struct cc *c, struct al_op *o, const char *p, size_t n, size_t col)
{
    struct keel_accesslog_format *f = c->f;
    char chunk[256];
    size_t cl = 0;
    if (n > 200)
        return fail(c, col, "START_TIME layout too long");
    o->off = (uint32_t)f->n_tsegs;
    for (size_t i = 0; i <= n; i++) {
        int kind = -1, digits = 0;
        size_t skip = 0;
        if (i < n && p[i] == '%' && i + 1 < n) {
            char nx = p[i + 1];
            if (nx == 'f') {
                kind = AL_TS_FRAC, digits = 9, skip = 2;
            } else if (nx >= '1' && nx <= '9' && i + 2 < n && p[i + 2] == 'f') {
                kind = AL_TS_FRAC, digits = nx - '0', skip = 3;
            } else if (nx == 's') {
                kind = AL_TS_EPOCH, skip = 2;
            } else {
                /* a strftime conversion (or %%): keep both bytes in the chunk */
                chunk[cl++] = p[i];
                chunk[cl++] = nx;
                i++;
                continue;
            }
        }
        if (kind >= 0 || i == n) {
            if (cl > 0) {
                if (f->n_tsegs == c->tsegs_cap) {
                    c->tsegs_cap = c->tsegs_cap ? c->tsegs_cap * 2 : 8;
                    f->tsegs = keel_realloc(f->tsegs, c->tsegs_cap * sizeof(*f->tsegs));
                }
                struct al_tseg *t = &f->tsegs[f->n_tsegs++];
                t->kind = AL_TS_STRFTIME;
                t->digits = 0;
                chunk[cl] = '\0';
                t->off = arena_put(c, chunk, cl + 1);
                cl = 0;
            }
            if (i == n)
                break;
            if (f->n_tsegs == c->tsegs_cap) {
                c->tsegs_cap = c->tsegs_cap ? c->tsegs_cap * 2 : 8;
                f->tsegs = keel_realloc(f->tsegs, c->tsegs_cap * sizeof(*f->tsegs));
            }
            struct al_tseg *t = &f->tsegs[f->n_tsegs++];
            t->kind = (uint8_t)kind;
            t->digits = (uint8_t)digits;
            t->off = 0;
            i += skip - 1;
            continue;
        }
        chunk[cl++] = p[i];
    }
    o->len = (uint32_t)(f->n_tsegs - o->off);
    return 0;
}

/* Resolve one parsed operator into an op with the given mode. col: 1-based column of its
 * '%' in the string being compiled. */
static int compile_op(struct cc *c, const struct opsyn *s, int mode, size_t col)
{
    const struct al_opdef *d = opdef_find(s->name, s->name_len);
    const char *why = d == NULL ? refused_why(s->name, s->name_len) : NULL;
    if (why != NULL)
        return fail(c, col, "operator %.*s cannot apply: %s", (int)s->name_len, s->name, why);
    if (d == NULL)
        return fail(c, col, "unknown operator %.*s", (int)s->name_len, s->name);
    if (d->arg == ARG_NONE && s->arg != NULL)
        return fail(c, col, "operator %s takes no argument", d->name);
    if (d->arg == ARG_REQ && (s->arg == NULL || s->arg_len == 0))
        return fail(c, col, "operator %s needs an argument: %%%s(...)%%", d->name, d->name);

    struct al_op *o = op_new(c);
    o->id = d->id;
    o->mode = (uint8_t)mode;
    o->flags = d->flags;
    o->part = d->part;
    o->field = d->field;
    if (s->has_trunc) {
        o->flags |= AL_F_TRUNC;
        o->trunc = s->trunc;
    }
    switch (d->special) {
    case SP_HEADER:
        return compile_header_op(c, o, s, col);
    case SP_PATH: /* %PATH%, %PATH(WQ|NQ[:ORIG|PATH])%: with or without the query */
        o->n_names = 1;
        o->pseudo[0] = AL_PS_PATH;
        o->noff[0] = arena_put(c, ":path", 5);
        o->nlen[0] = 5;
        if (s->arg != NULL && s->arg_len >= 2 && memcmp(s->arg, "NQ", 2) == 0)
            o->flags |= AL_F_NOQUERY;
        else if (s->arg != NULL && s->arg_len > 0 && !(s->arg_len >= 2 && memcmp(s->arg, "WQ", 2) == 0))
            return fail(c, col, "PATH takes WQ or NQ, optionally :ORIG or :PATH");
        return 0;
    case SP_QUERY:
        o->noff[0] = arena_put(c, s->arg, s->arg_len);
        o->nlen[0] = (uint32_t)s->arg_len;
        o->n_names = 1;
        return 0;
    case SP_CEL: { /* Envoy's CEL formatter: compiled here, evaluated over the bag per line */
        struct keel_expr_error e = { 0 };
        struct keel_expr *x = keel_expr_compile(s->arg, s->arg_len, KEEL_EXPR_CEL, &e);
        if (x == NULL) /* the column of the error inside the format: after "%CEL(" */
            return fail(c, col + s->name_len + 1 + (size_t)(e.col > 0 ? e.col : 1), "CEL: %s", e.msg);
        struct keel_accesslog_format *f = c->f;
        f->exprs = keel_realloc(f->exprs, (f->n_exprs + 1) * sizeof(*f->exprs));
        o->off = (uint32_t)f->n_exprs;
        f->exprs[f->n_exprs++] = x;
        return 0;
    }
    case SP_HOSTNAME:
        if (!c->have_hostname) {
            if (gethostname(c->hostname, sizeof(c->hostname)) != 0)
                c->hostname[0] = '\0';
            c->hostname[sizeof(c->hostname) - 1] = '\0';
            c->have_hostname = 1;
        }
        o->len = (uint32_t)strlen(c->hostname);
        o->off = arena_put(c, c->hostname, o->len);
        return 0;
    case SP_ENV: {
        char name[256];
        if (s->arg_len >= sizeof(name))
            return fail(c, col, "environment variable name too long");
        memcpy(name, s->arg, s->arg_len);
        name[s->arg_len] = '\0';
        const char *v = getenv(name);
        o->len = v ? (uint32_t)strlen(v) : 0;
        o->off = arena_put(c, v ? v : "", o->len);
        return 0;
    }
    default:
        break;
    }
    if (d->id == AL_START_TIME && s->arg != NULL && s->arg_len > 0) {
        o->id = AL_START_TIME_FMT;
        o->flags &= (uint8_t)~AL_F_CLEAN; /* the layout's own text may need escaping */
        return compile_time_fmt(c, o, s->arg, s->arg_len, col);
    }
    return 0;
}

/* Compile an Envoy format string s[0..len) into ops of the given mode (TEXT or
 * JSON_INSTR); literal text is copied (JSON-escaped in JSON_INSTR). */
static int compile_string(struct cc *c, const char *s, size_t len, int mode)
{
    size_t i = 0, lit = 0;
    while (i < len) {
        if (s[i] != '%') {
            i++;
            continue;
        }
        if (i + 1 < len && s[i + 1] == '%') {
            /* "%%": the literal so far plus one '%' */
            if (mode == AL_MODE_TEXT)
                emit_lit(c, s + lit, i + 1 - lit);
            else
                emit_lit_json(c, s + lit, i + 1 - lit);
            i += 2;
            lit = i;
            continue;
        }
        if (mode == AL_MODE_TEXT)
            emit_lit(c, s + lit, i - lit);
        else
            emit_lit_json(c, s + lit, i - lit);
        struct opsyn syn;
        if (parse_opsyn(c, s, len, i, &syn) < 0)
            return -1;
        if (compile_op(c, &syn, mode, i + 1) < 0)
            return -1;
        i = lit = syn.end;
    }
    if (mode == AL_MODE_TEXT)
        emit_lit(c, s + lit, len - lit);
    else
        emit_lit_json(c, s + lit, len - lit);
    return 0;
}

/* One "key": "value" of a JSON format: a value that is exactly one operator becomes a
 * typed JSON value; anything else a JSON string. */
static int compile_json_pair(struct cc *c, const char *key, size_t key_len, const char *v, size_t vlen,
                             int first)
{
    emit_lit(c, first ? "{\"" : ",\"", 2);
    emit_lit_json(c, key, key_len);
    emit_lit(c, "\":", 2);
    if (vlen >= 2 && v[0] == '%' && v[1] != '%') {
        struct opsyn syn;
        if (parse_opsyn(c, v, vlen, 0, &syn) < 0)
            return -1;
        if (syn.end == vlen)
            return compile_op(c, &syn, AL_MODE_JSON_TYPED, 1);
    }
    emit_lit(c, "\"", 1);
    if (compile_string(c, v, vlen, AL_MODE_JSON_INSTR) < 0)
        return -1;
    emit_lit(c, "\"", 1);
    return 0;
}

/* ---- a flat JSON object of string values: {"key": "format", ...} ---- */

struct jp {
    const char *s;
    size_t len, i;
    struct cc *c;
};

static void jp_ws(struct jp *p)
{
    while (p->i < p->len && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static int jp_hex4(struct jp *p, size_t at, unsigned *out)
{
    unsigned v = 0;
    if (at + 4 > p->len)
        return -1;
    for (size_t k = 0; k < 4; k++) {
        int h = hexval(p->s[at + k]);
        if (h < 0)
            return -1;
        v = v << 4 | (unsigned)h;
    }
    *out = v;
    return 0;
}

static size_t utf8_put(char *d, unsigned cp)
{
    if (cp < 0x80) {
        d[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        d[0] = (char)(0xc0 | cp >> 6);
        d[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        d[0] = (char)(0xe0 | cp >> 12);
        d[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        d[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    d[0] = (char)(0xf0 | cp >> 18);
    d[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    d[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    d[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Decode the JSON string at p->i (a '"') into a fresh heap string (*out, *out_len).
 * *start gets the index of its first content byte. */
static int jp_string(struct jp *p, char **out, size_t *out_len, size_t *start)
{
    if (p->i >= p->len || p->s[p->i] != '"')
        return fail(p->c, p->i + 1, "expected a string");
    size_t open = p->i++;
    *start = p->i;
    char *d = keel_alloc(p->len - p->i + 1);
    size_t n = 0;
    for (;;) {
        if (p->i >= p->len) {
            free(d);
            return fail(p->c, open + 1, "unterminated string");
        }
        unsigned char ch = (unsigned char)p->s[p->i];
        if (ch == '"') {
            p->i++;
            break;
        }
        if (ch < 0x20) {
            free(d);
            return fail(p->c, p->i + 1, "control character in string (escape it)");
        }
        if (ch != '\\') {
            d[n++] = (char)ch;
            p->i++;
            continue;
        }
        if (p->i + 1 >= p->len) {
            free(d);
            return fail(p->c, open + 1, "unterminated string");
        }
        char e = p->s[p->i + 1];
        size_t at = p->i;
        p->i += 2;
        switch (e) {
        case '"': d[n++] = '"'; break;
        case '\\': d[n++] = '\\'; break;
        case '/': d[n++] = '/'; break;
        case 'b': d[n++] = '\b'; break;
        case 'f': d[n++] = '\f'; break;
        case 'n': d[n++] = '\n'; break;
        case 'r': d[n++] = '\r'; break;
        case 't': d[n++] = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (jp_hex4(p, p->i, &cp) < 0) {
                free(d);
                return fail(p->c, at + 1, "bad \\u escape");
            }
            p->i += 4;
            if (cp >= 0xd800 && cp < 0xdc00) {
                if (p->i + 6 > p->len || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u' ||
                    jp_hex4(p, p->i + 2, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff) {
                    free(d);
                    return fail(p->c, at + 1, "unpaired surrogate in \\u escape");
                }
                p->i += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                free(d);
                return fail(p->c, at + 1, "unpaired surrogate in \\u escape");
            }
            if (cp == 0) {
                free(d);
                return fail(p->c, at + 1, "\\u0000 is not allowed in a format");
            }
            n += utf8_put(d + n, cp);
            break;
        }
        default:
            free(d);
            return fail(p->c, at + 1, "bad escape '\\%c'", isprint((unsigned char)e) ? e : '?');
        }
    }
    d[n] = '\0';
    *out = d;
    *out_len = n;
    return 0;
}

static int compile_json_object(struct cc *c, const char *s)
{
    struct jp p = { s, strlen(s), 0, c };
    char **keys = NULL;
    size_t n_keys = 0;
    int rc = -1;

    jp_ws(&p);
    if (p.i >= p.len || s[p.i] != '{') {
        fail(c, p.i + 1, "a JSON format must be an object");
        goto out;
    }
    p.i++;
    jp_ws(&p);
    if (p.i < p.len && s[p.i] == '}') {
        p.i++;
        emit_lit(c, "{", 1);
    } else {
        for (;;) {
            char *key, *val;
            size_t klen, vlen, kstart, vstart;
            jp_ws(&p);
            size_t kcol = p.i + 1;
            if (jp_string(&p, &key, &klen, &kstart) < 0)
                goto out;
            keys = keel_realloc(keys, (n_keys + 1) * sizeof(*keys));
            keys[n_keys++] = key;
            for (size_t k = 0; k + 1 < n_keys; k++)
                if (strcmp(keys[k], key) == 0) {
                    fail(c, kcol, "duplicate key \"%s\"", key);
                    goto out;
                }
            jp_ws(&p);
            if (p.i >= p.len || s[p.i] != ':') {
                fail(c, p.i + 1, "expected ':' after key \"%s\"", key);
                goto out;
            }
            p.i++;
            jp_ws(&p);
            if (p.i >= p.len || s[p.i] != '"') {
                fail(c, p.i + 1, "value of key \"%s\" must be a string (a format with operators)", key);
                goto out;
            }
            if (jp_string(&p, &val, &vlen, &vstart) < 0)
                goto out;
            c->key = key;
            c->col_base = vstart;
            int r = compile_json_pair(c, key, klen, val, vlen, n_keys == 1);
            c->key = NULL;
            c->col_base = 0;
            free(val);
            if (r < 0)
                goto out;
            jp_ws(&p);
            if (p.i < p.len && s[p.i] == ',') {
                p.i++;
                continue;
            }
            if (p.i < p.len && s[p.i] == '}') {
                p.i++;
                break;
            }
            fail(c, p.i + 1, "expected ',' or '}'");
            goto out;
        }
    }
    jp_ws(&p);
    if (p.i != p.len) {
        fail(c, p.i + 1, "trailing bytes after the JSON object");
        goto out;
    }
    emit_lit(c, "}\n", 2);
    rc = 0;
out:
    for (size_t k = 0; k < n_keys; k++)
        free(keys[k]);
    free(keys);
    return rc;
}

/* Literal ops, and operators that render the same for every record (AL_UNSET: "-", in a
 * typed JSON value null), become the text before the next value op (or the tail): the
 * renderer then takes one step per value instead of one per piece of the format. */
static void fold_literals(struct cc *c)
{
    struct keel_accesslog_format *f = c->f;
    size_t cap = 64, len = 0, n = 0;
    char *text = keel_alloc(cap);
    for (size_t i = 0; i < f->n_ops; i++) {
        struct al_op *o = &f->ops[i];
        const char *p = NULL;
        size_t k = 0;
        if (o->id == AL_LIT) {
            p = f->arena + o->off;
            k = o->len;
        } else if (o->id == AL_UNSET && !(o->flags & AL_F_TCP_ZERO)) {
            p = o->mode == AL_MODE_JSON_TYPED ? "null" : "-";
            k = strlen(p);
        } else {
            o->pre_off = arena_put(c, text, len);
            o->pre_len = (uint32_t)len;
            len = 0;
            f->ops[n++] = *o;
            continue;
        }
        if (len + k > cap) {
            while (len + k > cap)
                cap *= 2;
            text = keel_realloc(text, cap);
        }
        memcpy(text + len, p, k);
        len += k;
    }
    f->tail_off = arena_put(c, text, len);
    f->tail_len = (uint32_t)len;
    f->n_ops = n;
    f->arena[f->arena_len] = '\0';
    free(text);
}

struct keel_accesslog_format *keel_accesslog_compile(const char *fmt, enum keel_accesslog_encoding enc,
                                                     char *err, size_t errlen)
{
    struct keel_accesslog_format *f = keel_calloc(1, sizeof(*f));
    struct cc c = { .f = f, .lit_end = SIZE_MAX, .err = err, .errlen = errlen };
    int rc;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    f->enc = enc;
    if (enc == KEEL_ACCESSLOG_TEXT) {
        if (fmt == NULL)
            fmt = keel_accesslog_istio_text_format;
        size_t len = strlen(fmt);
        rc = compile_string(&c, fmt, len, AL_MODE_TEXT);
        if (rc == 0 && (len == 0 || fmt[len - 1] != '\n'))
            emit_lit(&c, "\n", 1);
    } else if (enc == KEEL_ACCESSLOG_JSON) {
        if (fmt == NULL) {
            rc = 0;
            for (size_t i = 0; rc == 0 && i < sizeof(istio_json) / sizeof(istio_json[0]); i++)
                rc = compile_json_pair(&c, istio_json[i][0], strlen(istio_json[i][0]), istio_json[i][1],
                                       strlen(istio_json[i][1]), i == 0);
            if (rc == 0)
                emit_lit(&c, "}\n", 2);
        } else {
            rc = compile_json_object(&c, fmt);
        }
    } else {
        rc = fail(&c, 0, "unknown encoding %d", (int)enc);
    }
    if (rc < 0) {
        keel_accesslog_format_free(f);
        return NULL;
    }
    if (f->arena == NULL)
        arena_put(&c, "", 0);
    f->arena[f->arena_len] = '\0';
    f->reserve_hint = 64;
    for (size_t i = 0; i < f->n_ops; i++)
        f->reserve_hint += f->ops[i].id == AL_LIT ? f->ops[i].len : 32;
    fold_literals(&c);
    return f;
}

void keel_accesslog_format_free(struct keel_accesslog_format *f)
{
    if (f == NULL)
        return;
    for (size_t i = 0; i < f->n_exprs; i++)
        keel_expr_free(f->exprs[i]);
    free(f->exprs);
    free(f->ops);
    free(f->tsegs);
    free(f->arena);
    free(f);
}

bool keel_accesslog_uses_bag(const struct keel_accesslog_format *f)
{
    return f != NULL && f->n_exprs > 0;
}
