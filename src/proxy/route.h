/* Traffic routing in the proxy (route.c): VirtualService routes for sidecar, gateway and
 * waypoint roles, subsets, waypoint redirection, fault injection, route timeouts and
 * retries. The match itself is config/route_match.c; this file ties it to sessions and
 * to the targets of a generation. */
#ifndef KEEL_PROXY_ROUTE_H
#define KEEL_PROXY_ROUTE_H

#include "config/config.h"
#include "core/buf.h"
#include "core/loop.h"
#include "net/sock.h"
#include "proxy/peer.h"

struct session;
struct proxy_gen;
struct server;
struct gen_port;

/* ROUTE_REPLY: answer locally with the route_state's reply (outboundTrafficPolicy) */
enum route_result { ROUTE_OK, ROUTE_NONE, ROUTE_NO_ENDPOINT, ROUTE_NO_CLUSTER, ROUTE_REPLY };

/* Per request, inside struct session; reset by route_state_reset. */
struct route_state {
    const struct keel_route_http *http;  /* the VirtualService route taken; NULL: none */
    const struct keel_route_match *which;
    const struct gen_port *targets;      /* where retries pick their next endpoint */
    struct keel_buf path;                /* the rewritten path, when rewritten */
    struct keel_timer delay;             /* fault delay */
    int64_t deadline_us;                 /* route timeout over every attempt; 0: none */
    uint32_t retries_left;
    bool retried_any;
    const struct keel_peer *src_peer;    /* waypoint: the client, from its sidecar (in the
                                          * exchange's tables); NULL: none */
    struct keel_str src_peer_raw;        /* ... and the header value, passed on */
    const char *name;                    /* Istio's route name without a VirtualService
                                          * route: allow_any, block_all; NULL: none */
    int reply_status;                    /* ROUTE_REPLY: the local answer */
    uint32_t reply_flags;
    const char *reply_details, *reply_body;
};

/* /etc/hosts as read when a generation is built: passthrough resolves names without
 * blocking a worker on DNS (passthrough.c). */
struct route_host {
    char *name;
    struct keel_addr addr;               /* port 0 */
};

/* Per generation (gen.c): targets of every VirtualService destination, per port of its
 * service and filtered by subset, the waypoint target of each service, and the
 * VirtualServices of the gateway role. */
struct route_gen {
    struct route_gen_dest *dests;        /* [cfg->routing->n_dests] */
    size_t n_dests;
    struct keel_proxy_target *waypoints; /* [cfg->n_services]; addr_str "" = none */
    const struct keel_route_vs **gw_vs;  /* gateway role */
    size_t n_gw_vs;
    struct route_host *hosts;            /* sidecar with ALLOW_ANY: /etc/hosts */
    size_t n_hosts;
};

void route_gen_build(struct proxy_gen *g, const struct server *srv);
void route_gen_free(struct proxy_gen *g);

void route_state_reset(struct session *s); /* between requests and at close */

/* Outbound routing once --route did not match: waypoint redirection (sidecar), the
 * VirtualServices of the role, else the registry. host excludes the port. */
enum route_result route_outbound(struct session *s, struct keel_str host, int port, bool has_port);
/* outboundTrafficPolicy for a host nothing routes (passthrough.c): ALLOW_ANY passes it
 * through to host:port (PassthroughCluster), REGISTRY_ONLY answers 502 (BlackHoleCluster);
 * ROUTE_OK or ROUTE_REPLY. */
enum route_result route_passthrough(struct session *s, struct keel_str host, int port);
void route_hosts_load(struct route_gen *rg, const char *path);
void route_hosts_free(struct route_gen *rg);

/* After routing, before the upstream: fault abort (answered, true), fault delay (armed,
 * true; session_http_proceed runs when it fires), else rewrites applied (false). */
bool route_before_upstream(struct session *s);
/* The response-head timer of this attempt, in ms (0: none). */
int64_t route_attempt_timeout_ms(struct session *s, int64_t listener_ms);
/* A retriable outcome (KEEL_RETRY_* bits that describe it, status 0 if none): true when
 * the route allows another attempt; s->target is then the next endpoint. */
bool route_retry(struct session *s, uint32_t cond, int status);

#endif
