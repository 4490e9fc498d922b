/* Peer metadata exchange (Istio's x-envoy-peer-metadata, in a text form of our own): the
 * outbound sidecar sends its workload's identity in a request header, the inbound one
 * answers with its own in a response header; each side strips the header before the app
 * sees it. That is how both reporters know source.* and destination.*.
 *
 *   x-keel-peer-metadata: name=reviews-v1;namespace=default;sa=bookinfo-reviews;
 *                         service=reviews.default.svc.cluster.local;label.app=reviews
 *
 * Values never contain ';' (Kubernetes names and label values cannot), so parsing slices
 * the header value in place. */
#ifndef KEEL_PROXY_PEER_H
#define KEEL_PROXY_PEER_H

#include "attr/attr.h"
#include "core/buf.h"
#include "core/str.h"

#include <stdbool.h>

#define KEEL_PEER_HEADER "x-keel-peer-metadata"
#define KEEL_PEER_MAX_LABELS 32

struct keel_peer {
    bool present;
    struct keel_str name, namespace, service_account, service;
    struct keel_str_pair labels[KEEL_PEER_MAX_LABELS];
    size_t n_labels;
};

/* Parse a header value; fields it lacks stay empty. Unknown keys are ignored. */
void keel_peer_parse(struct keel_str v, struct keel_peer *p);
/* Encode an identity (the labels as given). */
void keel_peer_encode(const struct keel_peer *p, struct keel_buf *out);

#endif
