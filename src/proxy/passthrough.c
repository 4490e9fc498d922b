/* Mesh outboundTrafficPolicy: what a sidecar does with a host that no --route, no
 * VirtualService and no registry service names. Istio's sidecar either passes such
 * traffic through to where the app sent it (ALLOW_ANY, the default: the
 * PassthroughCluster, route "allow_any") or answers it with a direct 502 (REGISTRY_ONLY:
 * the BlackHoleCluster, route "block_all", no response flag). Istio's stats name these
 * in destination_service_name and keep the host in destination_service.
 *
 * Where "through" is: Envoy takes the original destination from the socket (iptables);
 * keel is an HTTP proxy and has only the Host. An IP literal is used as it is; a name is
 * looked up in /etc/hosts as read when the generation was built (main thread), never with
 * DNS, which would block a worker's loop; a name not found there is 503 DF
 * (dns_resolution_failure), as Envoy's dynamic forward proxy answers. A Host naming the
 * listener itself is refused (503 UH) so that a request cannot loop through the proxy. */
#include "proxy/session_int.h"

#include "core/alloc.h"
#include "telemetry/response_flags.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HOSTS_MAX 4096 /* entries kept from the hosts file */

static void add_host(struct route_gen *rg, size_t *cap, const char *name, const struct keel_addr *a)
{
    for (size_t i = 0; i < rg->n_hosts; i++)
        if (!strcasecmp(rg->hosts[i].name, name))
            return; /* the first line naming it wins, as in glibc */
    if (rg->n_hosts == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        rg->hosts = keel_realloc(rg->hosts, *cap * sizeof(*rg->hosts));
    }
    rg->hosts[rg->n_hosts++] = (struct route_host){ keel_strdup(name), *a };
}

/* Parse an address of the hosts file (no port) into a. */
static bool parse_ip(const char *s, struct keel_addr *a)
{
    memset(a, 0, sizeof(*a));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&a->ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a->ss;
    if (inet_pton(AF_INET, s, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        a->len = sizeof(*v4);
        return true;
    }
    if (inet_pton(AF_INET6, s, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        a->len = sizeof(*v6);
        return true;
    }
    return false;
}

void route_hosts_load(struct route_gen *rg, const char *path)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return;
    char line[1024];
    size_t cap = 0;
    while (fgets(line, sizeof(line), f) != NULL && rg->n_hosts < HOSTS_MAX) {
        char *hash = strchr(line, '#');
        if (hash != NULL)
            *hash = '\0';
        char *save = NULL, *tok = strtok_r(line, " \t\r\n", &save);
        struct keel_addr a;
        if (tok == NULL || !parse_ip(tok, &a))
            continue;
        while ((tok = strtok_r(NULL, " \t\r\n", &save)) != NULL && rg->n_hosts < HOSTS_MAX)
            add_host(rg, &cap, tok, &a);
    }
    fclose(f);
}

void route_hosts_free(struct route_gen *rg)
{
    for (size_t i = 0; i < rg->n_hosts; i++)
        free(rg->hosts[i].name);
    free(rg->hosts);
    rg->hosts = NULL;
    rg->n_hosts = 0;
}

static void set_port(struct keel_addr *a, int port)
{
    if (a->ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&a->ss)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)&a->ss)->sin6_port = htons((uint16_t)port);
}

/* host as an IP literal ("10.0.0.1", "[::1]") or a name of the hosts snapshot. */
static bool resolve(const struct route_gen *rg, struct keel_str host, int port, struct keel_addr *a)
{
    char name[256];
    if (host.len >= 2 && host.p[0] == '[' && host.p[host.len - 1] == ']') {
        host.p++;
        host.len -= 2;
    }
    if (host.len == 0 || host.len >= sizeof(name))
        return false;
    memcpy(name, host.p, host.len);
    name[host.len] = '\0';
    if (!parse_ip(name, a)) {
        size_t i = 0;
        while (i < rg->n_hosts && strcasecmp(rg->hosts[i].name, name) != 0)
            i++;
        if (i == rg->n_hosts)
            return false;
        *a = rg->hosts[i].addr;
    }
    set_port(a, port);
    return true;
}

static bool loopback_or_any(const struct keel_addr *a)
{
    if (a->ss.ss_family == AF_INET) {
        uint32_t ip = ntohl(((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr);
        return (ip >> 24) == 127 || ip == 0;
    }
    const struct in6_addr *ip6 = &((const struct sockaddr_in6 *)&a->ss)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(ip6) || IN6_IS_ADDR_UNSPECIFIED(ip6) ||
           (IN6_IS_ADDR_V4MAPPED(ip6) && (ip6->s6_addr[12] == 127 || !memcmp(ip6->s6_addr + 12, "\0\0\0\0", 4)));
}

/* The request would come back to the listener it arrived on. */
static bool is_self(const struct session *s, const struct keel_addr *a)
{
    if (keel_addr_port(a) != keel_addr_port(&s->local_addr))
        return false;
    if (a->len == s->local_addr.len && !memcmp(&a->ss, &s->local_addr.ss, a->len))
        return true;
    return loopback_or_any(a);
}

static enum route_result reply(struct session *s, int status, uint32_t flags, const char *details,
                               const char *body)
{
    s->rt.reply_status = status;
    s->rt.reply_flags = flags;
    s->rt.reply_details = details;
    s->rt.reply_body = body;
    return ROUTE_REPLY;
}

enum route_result route_passthrough(struct session *s, struct keel_str host, int port)
{
    const struct proxy_gen *g = s->wg->g;
    if (g->cfg->mesh.outbound_mode == KEEL_CONFIG_REGISTRY_ONLY) {
        s->svc_name = LIT("BlackHoleCluster");
        s->rt.name = "block_all";
        return reply(s, 502, 0, "direct_response", "");
    }
    s->svc_name = LIT("PassthroughCluster");
    s->rt.name = "allow_any";
    struct keel_proxy_target *t = &s->tables->passthrough;
    if (!resolve(&g->route, host, port, &t->addr))
        return reply(s, 503, KEEL_RF_DF, "dns_resolution_failure", "dns resolution failure");
    if (is_self(s, &t->addr))
        return reply(s, 503, KEEL_RF_UH, "no_healthy_upstream", "no healthy upstream");
    t->addr.len = t->addr.ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    keel_addr_format((const struct sockaddr *)&t->addr.ss, t->addr_str, sizeof(t->addr_str));
    snprintf(t->cluster, sizeof(t->cluster), "PassthroughCluster");
    t->workload = NULL;
    s->target = t;
    return ROUTE_OK;
}
