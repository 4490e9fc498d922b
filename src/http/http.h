/* HTTP/1.1 message heads: pure parsers (bytes in; consumed / need more / error with
 * offset), no I/O and no allocation. Header names and values are slices of the input. */
#ifndef KEEL_HTTP_HTTP_H
#define KEEL_HTTP_HTTP_H

#include "core/str.h"

#include <stdint.h>

struct keel_http_header {
    struct keel_str name;
    struct keel_str value;
};

#endif
