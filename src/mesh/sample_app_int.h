/* What the sample-app files share (names prefixed sa_: the mesh folder links with the
 * mesh runner's files).
 *   sample_app.c        listener, signals, a thread per connection, the request loop
 *   sample_app_pages.c  the endpoints
 *   sample_app_call.c   the main page's downstream calls and their JSON rendering */
#ifndef KEEL_MESH_SAMPLE_APP_INT_H
#define KEEL_MESH_SAMPLE_APP_INT_H

#include "mesh/sample_app.h"

#include "core/buf.h"
#include "http/http.h"
#include "net/sock.h"

#define SA_MAX_BODY (1024 * 1024)    /* request and downstream bodies kept in memory */
#define SA_IO_TIMEOUT_MS 30000       /* a peer silent this long is given up */
#define SA_CONNECT_TIMEOUT_MS 5000
#define SA_MAX_DOWN 8                /* cached downstream connections per connection */

/* One --call URL, split once at start. */
struct sa_target {
    const char *url;
    char host[256];        /* as in the URL, for the Host header and the route: "details:9080" */
    char hostname[256];    /* without the port, to resolve for direct calls */
    int port;
    const char *path;      /* into url; "/" when the URL has none */
    struct keel_addr addr; /* direct calls: resolved at start, else at each call */
    bool resolved;
};

struct sa_app {
    const struct keel_sample_app_options *o;
    struct sa_target *targets;
    bool via_proxy;
    char proxy_str[KEEL_ADDR_STRLEN];
    struct keel_addr proxy;
    int stop_fd;           /* eventfd, readable from the moment the app stops */
    char instance[160];
};

/* A kept-alive downstream connection of one client connection. */
struct sa_down {
    int fd;
    struct keel_addr addr;
};

struct sa_downs {
    struct sa_down d[SA_MAX_DOWN];
    size_t n;
};

/* Headers of the incoming request that the calls carry on (trace context and friends). */
struct sa_forward {
    struct keel_http_header h[32];
    size_t n;
    bool has_user_agent;
};

/* Wait until fd is ready for ev (POLLIN/POLLOUT) or the app stops. 0 when ready,
 * KEEL_ECLOSED when stopping, KEEL_ELIMIT on timeout. */
int sa_wait(const struct sa_app *app, int fd, short ev, int timeout_ms);
/* Sleep ms, cut short when the app stops (then KEEL_ECLOSED). */
int sa_sleep(const struct sa_app *app, int64_t ms);
/* Write all of p; 0 or a negative KEEL_E*. */
int sa_send_all(const struct sa_app *app, int fd, const char *p, size_t len);
/* Read more into b (at most `max` bytes kept); bytes read (> 0), or KEEL_ECLOSED at EOF /
 * stop, KEEL_ELIMIT when b would exceed max or on timeout, KEEL_EIO. */
int sa_read_more(const struct sa_app *app, int fd, struct keel_buf *b, size_t max, int timeout_ms);

/* What a handler answers. */
struct sa_answer {
    int status;
    const char *ctype;
    struct keel_str ctype_in; /* else this one, from the request */
    const char *extra;    /* more header lines, each ending in CRLF */
    bool close;
    bool no_latency;      /* health checks stay fast */
};

/* Answer one request: the body into resp, the rest into a. */
void sa_route(const struct sa_app *app, struct sa_downs *downs, struct keel_buf *resp,
              const struct keel_http_request *req, const char *body, size_t body_len,
              struct sa_answer *a);

int sa_targets_init(struct sa_app *app);
void sa_targets_fini(struct sa_app *app);
void sa_downs_close(struct sa_downs *ds);
/* Make every call in order and append the JSON array of results to out. Returns the
 * number of calls that failed (no response, or a 5xx). */
int sa_calls_run(const struct sa_app *app, struct sa_downs *ds, const struct sa_forward *fw,
                 struct keel_buf *out);
/* Append p[0..len) to out as a JSON string. */
void sa_json_strn(struct keel_buf *out, const char *p, size_t len);
/* True when p[0..len) is one complete JSON value (so it can be embedded as is). */
bool sa_json_valid(const char *p, size_t len);

#endif
