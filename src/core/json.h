/* The one JSON string escaper (access logs, stdio JSON lines, admin endpoints, config
 * dumps) and the UTF-8 decoder every text output shares.
 *
 * Rule set: '"' and '\\' are backslash-escaped; control characters (C0 0x00-0x1f, DEL
 * 0x7f, and the C1 code points U+0080-U+009F) are escaped as \n \r \t \b \f or \u00XX;
 * valid UTF-8 passes through; every maximal invalid subpart (Unicode's "substitution of
 * maximal subparts", what Python's errors="replace" and browsers do) becomes U+FFFD.
 * Overlong forms, surrogates (ED A0..BF), code points above U+10FFFF and truncated
 * sequences are invalid. The output is therefore always valid JSON and valid UTF-8,
 * whatever bytes a client sent. */
#ifndef KEEL_CORE_JSON_H
#define KEEL_CORE_JSON_H

#include "core/buf.h"

#include <stddef.h>

/* Worst-case output bytes per input byte of keel_json_escape (a control byte -> \u00XX). */
#define KEEL_JSON_ESC_MAX 6

/* UTF-8 bytes of U+FFFD, the replacement character. */
#define KEEL_UTF8_REPLACEMENT "\xef\xbf\xbd"

/* At p[0..n) (n >= 1, p[0] >= 0x80): the length of the valid UTF-8 sequence starting
 * there, or 0 when it is invalid; then *bad is the length (>= 1) of its maximal invalid
 * subpart, to be replaced by one U+FFFD. */
size_t keel_utf8_seq(const unsigned char *p, size_t n, size_t *bad);

/* Escape s[0..n) as JSON string content (no quotes) into d, which has room for
 * n * KEEL_JSON_ESC_MAX bytes. Returns the bytes written. */
size_t keel_json_escape(char *d, const char *s, size_t n);

/* Append s[0..n) as a quoted JSON string. */
void keel_json_str_n(struct keel_buf *out, const char *s, size_t n);

/* Append s (NUL-terminated; NULL = "") as a quoted JSON string. */
void keel_json_str(struct keel_buf *out, const char *s);

#endif
