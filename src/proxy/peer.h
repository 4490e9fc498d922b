/* Peer metadata exchange (Istio's x-envoy-peer-metadata, in a text form of our own): the
 * outbound sidecar sends its workload's identity in a request header, the inbound one
 * answers with its own in a response header; each side strips the header before the app
 * sees it. That is how both reporters know source.* and destination.*.
 *
 *   x-keel-peer-metadata: name=reviews-v1;namespace=default;sa=bookinfo-reviews;
 *                         service=reviews.default.svc.cluster.local;cluster=Kubernetes;
 *                         label.app=reviews
 *
 * Values never contain ';' (Kubernetes names and label values cannot), so parsing slices
 * the header value in place.
 *
 * Validation (all or nothing; anything invalid leaves the peer unknown, as if the header
 * were absent, and the caller counts keel_peer_metadata_rejected_total): name, sa and
 * service are DNS-1123 subdomains (<= 253), namespace a DNS-1123 label (<= 63), cluster a
 * label value's charset (<= 63, non-empty); label keys
 * are Kubernetes qualified names ([prefix/]name, name <= 63 of [A-Za-z0-9._-] starting and
 * ending alphanumeric), values <= 63 of the same set, possibly empty; at most
 * KEEL_PEER_MAX_LABELS labels and KEEL_PEER_MAX_LEN bytes; no duplicate field, no empty
 * segment. So no value ever holds a quote, backslash, control byte or non-ASCII byte.
 *
 * Trust: without mTLS the header is a claim by whoever opened the connection; validation
 * bounds what it can do to the outputs (charset, size; series counts are capped by the
 * metric series limit), it does not authenticate the peer. */
#ifndef KEEL_PROXY_PEER_H
#define KEEL_PROXY_PEER_H

#include "attr/attr.h"
#include "core/buf.h"
#include "core/str.h"

#include <stdbool.h>

#define KEEL_PEER_HEADER "x-keel-peer-metadata"
#define KEEL_PEER_MAX_LABELS 32
#define KEEL_PEER_MAX_LEN 4096      /* bytes of the whole header value */
#define KEEL_PEER_MAX_LABEL_LEN 63  /* a label value or the name part of a key */

struct keel_peer {
    bool present;
    struct keel_str name, namespace, service_account, service;
    struct keel_str cluster;       /* Istio's CLUSTER_ID; empty: not said */
    struct keel_str_pair labels[KEEL_PEER_MAX_LABELS];
    size_t n_labels;
};

/* Parse and validate a header value: 0 with p filled (fields it lacks stay empty; keys of
 * later versions are skipped), or KEEL_EINVAL with p zeroed (not present). A value
 * without a name is invalid. */
int keel_peer_parse(struct keel_str v, struct keel_peer *p);
/* No identity (present false), for readers that want a peer without a NULL check. */
extern const struct keel_peer keel_peer_none;
/* Encode an identity; labels the parser would refuse are left out (so that one odd
 * label does not make the whole identity unknown at the peer), as are labels past
 * KEEL_PEER_MAX_LEN. */
void keel_peer_encode(const struct keel_peer *p, struct keel_buf *out);

#endif
