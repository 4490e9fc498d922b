#include "core/fmt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t keel_fmt_double(double d, char fmt, char *dst)
{
    size_t o = 0;
    if (isnan(d))
        return (size_t)sprintf(dst, "NaN");
    if (isinf(d))
        return (size_t)sprintf(dst, d > 0 ? "+Inf" : "-Inf");
    if (d == 0)
        return (size_t)sprintf(dst, signbit(d) ? "-0" : "0");
    /* the shortest %e precision that round-trips gives the digits and the exponent */
    char e[40];
    for (int prec = 0; prec < 17; prec++) {
        snprintf(e, sizeof(e), "%.*e", prec, d);
        if (strtod(e, NULL) == d)
            break;
    }
    char digits[24];
    size_t nd = 0;
    const char *p = e;
    if (*p == '-')
        dst[o++] = '-', p++;
    for (; *p && *p != 'e'; p++)
        if (*p != '.')
            digits[nd++] = *p;
    int exp = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    if (fmt == 'g' && (exp < -4 || exp >= 6)) { /* Go's eprec for shortest 'g' */
        dst[o++] = digits[0];
        if (nd > 1) {
            dst[o++] = '.';
            memcpy(dst + o, digits + 1, nd - 1);
            o += nd - 1;
        }
        o += (size_t)sprintf(dst + o, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    } else if (exp < 0) {
        dst[o++] = '0';
        dst[o++] = '.';
        for (int i = -1; i > exp; i--)
            dst[o++] = '0';
        memcpy(dst + o, digits, nd);
        o += nd;
    } else {
        size_t intlen = (size_t)exp + 1;
        for (size_t i = 0; i < intlen; i++)
            dst[o++] = i < nd ? digits[i] : '0';
        if (nd > intlen) {
            dst[o++] = '.';
            memcpy(dst + o, digits + intlen, nd - intlen);
            o += nd - intlen;
        }
    }
    dst[o] = '\0';
    return o;
}
