/* JSON text output shared by the admin endpoints and config dumps. */
#ifndef KEEL_CORE_JSON_H
#define KEEL_CORE_JSON_H

#include "core/buf.h"

/* Append s (NUL-terminated; NULL = "") as a quoted JSON string: quote and backslash
 * escaped, control bytes as \u00XX, everything else as is. */
void keel_json_str(struct keel_buf *out, const char *s);

#endif
