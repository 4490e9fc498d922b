#include "core/json.h"

void keel_json_str(struct keel_buf *out, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    keel_buf_append(out, "\"", 1);
    for (const char *run = s; s != NULL; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch != '\0' && ch != '"' && ch != '\\' && ch >= 0x20)
            continue;
        keel_buf_append(out, run, (size_t)(s - run)); /* the plain bytes before ch */
        if (ch == '\0')
            break;
        if (ch == '"' || ch == '\\') {
            char esc[2] = { '\\', (char)ch };
            keel_buf_append(out, esc, 2);
        } else {
            char esc[6] = { '\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15] };
            keel_buf_append(out, esc, 6);
        }
        run = s + 1;
    }
    keel_buf_append(out, "\"", 1);
}
