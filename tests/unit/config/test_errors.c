/* Each broken config yields exactly the expected FILE:LINE:COL: error: MESSAGE lines. */
#include "config_test.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdbool.h>

#include <dirent.h>
#include <stdlib.h>

#define MIXER "apiVersion: config.istio.io/v1alpha2\n"
#define META "metadata:\n  name: m\n  namespace: istio-system\n"

/* The corpus of broken configs: tests/config-errors/NN-what.yaml. Each file starts with
 * one "# expect: FILE:LINE:COL: error: MESSAGE" comment per diagnostic (FILE is the file's
 * own name, as `cd tests/config-errors && keel validate NN-what.yaml` prints it); the load
 * must fail and print exactly those lines, in that order, and nothing else. */
#define CORPUS_DIR "tests/config-errors"
#define EXPECT "# expect: "

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n - 1 == 0)
            buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* 0 when the file's diagnostics are exactly its "# expect:" lines */
static int replay(const char *name, const char *data, size_t len)
{
    const char *want[16];
    size_t wlen[16], nw = 0;
    for (const char *p = data; *p && !strncmp(p, EXPECT, strlen(EXPECT)) && nw < 16;) {
        const char *e = strchr(p, '\n');
        want[nw] = p + strlen(EXPECT);
        wlen[nw] = (size_t)((e ? e : p + strlen(p)) - want[nw]);
        nw++;
        p = e ? e + 1 : p + strlen(p);
    }
    struct keel_diag d;
    struct keel_config_source s = { name, data, len };
    keel_diag_init(&d);
    struct keel_config *cfg = keel_config_load_sources(&s, 1, &d);
    bool ok = nw > 0 && cfg == NULL && d.errors > 0 && d.n == nw;
    for (size_t i = 0; ok && i < nw; i++)
        ok = strlen(d.msgs[i]) == wlen[i] && !strncmp(d.msgs[i], want[i], wlen[i]);
    if (!ok) {
        fprintf(stderr, "%s: %s\n", name, nw ? "" : "no \"" EXPECT "\" line");
        for (size_t i = 0; i < nw; i++)
            fprintf(stderr, "  want %.*s\n", (int)wlen[i], want[i]);
        for (size_t i = 0; i < d.n; i++)
            fprintf(stderr, "  got  %s\n", d.msgs[i]);
        if (cfg)
            fprintf(stderr, "  (and the load succeeded)\n");
    }
    keel_config_unref(cfg);
    keel_diag_fini(&d);
    return ok ? 0 : -1;
}

static void corpus(void **state)
{
    DIR *dp = opendir(CORPUS_DIR);
    assert_non_null(dp);
    char *names[512];
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(dp)) != NULL && n < 512) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] != '.' && l > 5 && !strcmp(de->d_name + l - 5, ".yaml"))
            names[n++] = strdup(de->d_name);
    }
    closedir(dp);
    qsort(names, n, sizeof(names[0]), cmp_names);
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        char path[1024];
        size_t len;
        snprintf(path, sizeof(path), "%s/%s", CORPUS_DIR, names[i]);
        char *data = slurp(path, &len);
        if (data == NULL || replay(names[i], data, len) < 0)
            failed++;
        free(data);
        free(names[i]);
    }
    print_message("%zu broken configs, %d failed\n", n, failed);
    assert_true(n >= 45);
    assert_int_equal(failed, 0);
}

static void unknown_kind_is_a_warning(void **state)
{
    struct keel_diag d;
    struct keel_config *cfg =
        load_str("w.yaml", "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: v}\n", &d);
    assert_non_null(cfg);
    assert_int_equal(d.errors, 0);
    assert_int_equal(d.warnings, 1);
    assert_string_equal(d.msgs[0],
                        "w.yaml:2:7: warning: unknown kind \"Sidecar\" (apiVersion networking.istio.io/v1), ignored");
    keel_config_unref(cfg);
    keel_diag_fini(&d);
}

static void all_errors_are_listed(void **state)
{
    struct keel_diag d;
    struct keel_config *cfg = load_str("t.yaml",
                                       MIXER "kind: metric\n" META "spec:\n  valu: 1\n  value: request.size +\n"
                                             "  dimensions:\n    a: nosuch.attr\n",
                                       &d);
    assert_null(cfg);
    assert_int_equal(d.errors, 3);
    keel_diag_fini(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(corpus),
        cmocka_unit_test(unknown_kind_is_a_warning),
        cmocka_unit_test(all_errors_are_listed),
    };
    return cmocka_run_group_tests_name("config/errors", tests, NULL, NULL);
}
