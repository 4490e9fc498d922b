/* keel traces: traces from a Zipkin-compatible collector as indented trees. */
#include "cli/commands.h"

#include "core/alloc.h"
#include "core/buf.h"
#include "core/err.h"
#include "net/sock.h"
#include "tracing/zipkin_json.h"

#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: keel traces [OPTIONS] [TRACE_ID]\n"
    "\n"
    "  --collector URL   the collector (http://127.0.0.1:9411)\n"
    "  --service S       only traces with a span of service S\n"
    "  --limit N         at most N traces, newest first (10)\n"
    "  --lookback MS     how far back to look (86400000: a day)\n"
    "\n"
    "Each span: service, operation, duration, status (http.status_code, 'error' when\n"
    "tagged). Children are ordered by start; a span whose parent is missing is shown under\n"
    "the root, marked '(orphan: parent ID missing)'.\n";

enum { OPT_COLLECTOR = 256, OPT_SERVICE, OPT_LIMIT, OPT_LOOKBACK };

static const struct option options[] = {
    { "collector", required_argument, NULL, OPT_COLLECTOR },
    { "service", required_argument, NULL, OPT_SERVICE },
    { "limit", required_argument, NULL, OPT_LIMIT },
    { "lookback", required_argument, NULL, OPT_LOOKBACK },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
};

/* ---- HTTP GET, one request per connection ---- */

static int http_get(const char *base, const char *path, int *status, struct keel_buf *body)
{
    const char *hp = strncmp(base, "http://", 7) == 0 ? base + 7 : base;
    char host[300];
    size_t n = strcspn(hp, "/");
    if (n == 0 || n >= sizeof(host)) {
        fprintf(stderr, "keel traces: --collector '%s': want http://HOST:PORT\n", base);
        return KEEL_EINVAL;
    }
    memcpy(host, hp, n);
    host[n] = '\0';
    struct keel_addr a;
    if (keel_addr_parse(host, &a) < 0) {
        fprintf(stderr, "keel traces: --collector '%s': want http://HOST:PORT\n", base);
        return KEEL_EINVAL;
    }
    int fd = socket(a.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = { 10, 0 };
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }
    if (fd < 0 || connect(fd, (struct sockaddr *)&a.ss, a.len) < 0) {
        fprintf(stderr, "keel traces: cannot connect to %s: %s\n", host, strerror(errno));
        if (fd >= 0)
            close(fd);
        return KEEL_EIO;
    }
    struct keel_buf in = { 0 };
    keel_buf_printf(&in, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: application/json\r\n"
                         "Connection: close\r\n\r\n", path, host);
    int rc = send(fd, keel_buf_rptr(&in), keel_buf_len(&in), MSG_NOSIGNAL) ==
                     (ssize_t)keel_buf_len(&in) ? 0 : KEEL_EIO;
    keel_buf_consume(&in, keel_buf_len(&in));
    while (rc == 0) {
        keel_buf_reserve(&in, 65536);
        ssize_t r = recv(fd, keel_buf_wptr(&in), keel_buf_room(&in), 0);
        if (r == 0)
            break;
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            rc = KEEL_EIO;
        else
            in.wpos += (size_t)r;
    }
    close(fd);
    keel_buf_append(&in, "", 1);
    const char *p = keel_buf_rptr(&in), *sep = strstr(p, "\r\n\r\n");
    if (rc < 0 || sscanf(p, "HTTP/1.%*d %d", status) != 1 || sep == NULL) {
        fprintf(stderr, "keel traces: no HTTP answer from %s%s\n", base, path);
        keel_buf_release(&in);
        return KEEL_EIO;
    }
    keel_buf_append(body, sep + 4, strlen(sep + 4));
    keel_buf_release(&in);
    return 0;
}

/* ---- the tree ---- */

static const char *tag(const struct keel_zipkin_span *s, const char *key)
{
    for (size_t i = 0; i < s->n_tags; i++)
        if (!strcmp(s->tags[i].key, key))
            return s->tags[i].value;
    return NULL;
}

static int by_start(const void *a, const void *b)
{
    const struct keel_zipkin_span *x = *(struct keel_zipkin_span *const *)a;
    const struct keel_zipkin_span *y = *(struct keel_zipkin_span *const *)b;
    if (x->timestamp != y->timestamp)
        return x->timestamp < y->timestamp ? -1 : 1;
    return strcmp(x->id, y->id);
}

static bool has_span(struct keel_zipkin_span **v, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i]->id, id))
            return true;
    return false;
}

static void print_span(const struct keel_zipkin_span *s, const char *prefix, bool last,
                       bool orphan)
{
    const char *status = tag(s, "http.status_code"), *err = tag(s, "error");
    printf("%s%s %s  %s  ", prefix, last ? "└─" : "├─",
           s->local.service != NULL ? s->local.service : "?", s->name != NULL ? s->name : "-");
    if (s->duration != 0)
        printf("%.1f ms", (double)s->duration / 1000.0);
    else
        printf("-");
    if (status != NULL)
        printf("  %s", status);
    if (err != NULL && strcmp(err, "false") != 0)
        printf("  error");
    if (orphan)
        printf("  (orphan: parent %s missing)", s->parent_id);
    printf("\n");
}

/* v is sorted by start; depth bounded by the span count (ids may form a loop). */
static void print_children(struct keel_zipkin_span **v, size_t n, const char *parent,
                           const char *prefix, size_t depth, bool with_orphans)
{
    size_t *kids = keel_alloc((n + 1) * sizeof(*kids)), nk = 0;
    bool *orphan = keel_alloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        bool child = !strcmp(v[i]->parent_id, parent) && strcmp(v[i]->id, parent) != 0;
        bool lost = with_orphans && v[i]->parent_id[0] != '\0' && !has_span(v, n, v[i]->parent_id);
        if (child || lost) {
            orphan[nk] = !child;
            kids[nk++] = i;
        }
    }
    char next[512];
    for (size_t k = 0; k < nk; k++) {
        const struct keel_zipkin_span *s = v[kids[k]];
        bool last = k + 1 == nk;
        print_span(s, prefix, last, orphan[k]);
        if (depth >= n || strlen(prefix) + 8 >= sizeof(next))
            continue;
        snprintf(next, sizeof(next), "%s%s", prefix, last ? "   " : "│  ");
        print_children(v, n, s->id, next, depth + 1, false);
    }
    free(kids);
    free(orphan);
}

static void print_trace(struct keel_zipkin_span **v, size_t n)
{
    if (n == 0)
        return;
    qsort(v, n, sizeof(*v), by_start);
    int64_t begin = 0, end = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i]->timestamp == 0)
            continue;
        if (begin == 0 || v[i]->timestamp < begin)
            begin = v[i]->timestamp;
        if (v[i]->timestamp + v[i]->duration > end)
            end = v[i]->timestamp + v[i]->duration;
    }
    printf("trace %s  (%zu span%s, %.1f ms)\n", v[0]->trace_id, n, n == 1 ? "" : "s",
           (double)(end - begin) / 1000.0);
    size_t roots = 0;
    for (size_t i = 0; i < n; i++)
        roots += v[i]->parent_id[0] == '\0';
    size_t seen = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i]->parent_id[0] != '\0')
            continue;
        seen++;
        print_span(v[i], "", seen == roots, false);
        /* the orphans hang under the first root */
        print_children(v, n, v[i]->id, seen == roots ? "   " : "│  ", 1, seen == 1);
    }
    if (roots == 0) /* every span has a parent, none of them here: list them flat */
        print_children(v, n, "", "", 1, true);
}

static int print_json_trace(json_object *arr)
{
    const char *text = json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PLAIN);
    struct keel_zipkin_list l = { 0 };
    char err[512];
    if (keel_zipkin_json_parse(text, strlen(text), &l, err, sizeof(err)) < 0) {
        fprintf(stderr, "keel traces: the collector sent a bad trace: %s\n", err);
        return KEEL_EINVAL;
    }
    print_trace(l.spans, l.n);
    keel_zipkin_list_fini(&l);
    return 0;
}

static void urlencode(struct keel_buf *b, const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            strchr("-._~", ch) != NULL)
            keel_buf_append(b, s, 1);
        else
            keel_buf_printf(b, "%%%02X", ch);
    }
}

int keel_cmd_traces(int argc, char **argv)
{
    const char *collector = "http://127.0.0.1:9411", *service = NULL;
    long long limit = 10, lookback = 86400000;
    int c;
    char *end;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (c) {
        case OPT_COLLECTOR: collector = optarg; break;
        case OPT_SERVICE: service = optarg; break;
        case OPT_LIMIT:
        case OPT_LOOKBACK: {
            long long v = strtoll(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || v <= 0) {
                fprintf(stderr, "keel traces: --%s: '%s' is not a positive number\n",
                        c == OPT_LIMIT ? "limit" : "lookback", optarg);
                return 2;
            }
            *(c == OPT_LIMIT ? &limit : &lookback) = v;
            break;
        }
        case 'h': fputs(usage_text, stdout); return 0;
        default: fputs(usage_text, stderr); return 2;
        }
    }
    if (argc - optind > 1) {
        fputs(usage_text, stderr);
        return 2;
    }
    struct keel_buf path = { 0 }, body = { 0 };
    if (optind < argc) {
        keel_buf_append_str(&path, "/api/v2/trace/");
        urlencode(&path, argv[optind]);
    } else {
        keel_buf_printf(&path, "/api/v2/traces?limit=%lld&lookback=%lld", limit, lookback);
        if (service != NULL) {
            keel_buf_append_str(&path, "&serviceName=");
            urlencode(&path, service);
        }
    }
    keel_buf_append(&path, "", 1);
    int status = 0, rc = 1;
    if (http_get(collector, keel_buf_rptr(&path), &status, &body) < 0)
        goto out;
    keel_buf_append(&body, "", 1);
    if (status != 200) {
        fprintf(stderr, "keel traces: %s answered %d: %s", collector, status, keel_buf_rptr(&body));
        goto out;
    }
    json_object *root = json_tokener_parse(keel_buf_rptr(&body));
    if (root == NULL || !json_object_is_type(root, json_type_array)) {
        fprintf(stderr, "keel traces: %s did not answer a JSON array\n", collector);
        json_object_put(root);
        goto out;
    }
    rc = 0;
    if (optind < argc) {
        rc = print_json_trace(root) < 0;
    } else {
        size_t n = json_object_array_length(root);
        if (n == 0)
            printf("no traces%s%s\n", service ? " of service " : "", service ? service : "");
        for (size_t i = 0; i < n && rc == 0; i++) {
            if (i)
                printf("\n");
            rc = print_json_trace(json_object_array_get_idx(root, i)) < 0;
        }
    }
    json_object_put(root);
out:
    keel_buf_release(&path);
    keel_buf_release(&body);
    return rc;
}
