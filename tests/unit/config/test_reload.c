/* Reload: a failing reload keeps the old generation and is counted; an unchanged dir
 * costs a stat per file; refcounts keep an old generation alive for its users; the
 * watch reports yaml changes, including rename-into-dir. */
#include "config_test.h"

#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <cmocka.h>

static char dir[64];

static void put(const char *name, const char *text)
{
    char p[256], tmp[256];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    snprintf(tmp, sizeof(tmp), "%s/.tmp", dir);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(rename(tmp, p), 0);
}

static const char good1[] = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  ports: [{name: http, port: 80}]\n";
static const char good2[] = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  ports: [{name: grpc, port: 81}]\n";
static const char bad[] = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  ports: [{name: http, port: x}]\n";

static void failing_reload_keeps_old(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/keel-reload-XXXXXX");
    assert_non_null(mkdtemp(dir));
    put("a.yaml", good1);
    const char *paths[1] = { dir };
    struct keel_diag d;
    keel_diag_init(&d);
    struct keel_config *cur = keel_config_load_paths(paths, 1, &d);
    assert_non_null(cur);

    struct keel_config_watch *w = keel_config_watch_new(dir);
    assert_non_null(w);
    assert_false(keel_config_watch_changed(w));

    /* unchanged: the same generation, no parse */
    struct keel_config *same = keel_config_reload(cur, paths, 1, &d);
    assert_ptr_equal(same, cur);
    keel_config_unref(same);

    uint64_t fails = keel_config_reload_failures();
    put("a.yaml", bad); /* rename into the dir, like keel apply */
    assert_true(keel_config_watch_changed(w));
    struct keel_config *next = keel_config_reload(cur, paths, 1, &d);
    assert_null(next);
    assert_int_equal(keel_config_reload_failures(), fails + 1);
    assert_true(d.errors > 0);
    /* the running config is untouched */
    assert_int_equal(cur->services[0].ports[0].port, 80);

    /* a user holding the old generation keeps it past the swap */
    struct keel_config *held = keel_config_ref(cur);
    put("a.yaml", good2);
    assert_true(keel_config_watch_changed(w));
    next = keel_config_reload(cur, paths, 1, &d);
    assert_non_null(next);
    assert_true(next->generation > cur->generation);
    assert_int_equal(next->services[0].ports[0].protocol, KEEL_PROTO_GRPC);
    keel_config_unref(cur); /* the swap drops the loop's ref */
    assert_int_equal(held->services[0].ports[0].port, 80);
    keel_config_unref(held);

    /* non-yaml files do not count as changes */
    put("notes.txt", "x");
    assert_false(keel_config_watch_changed(w));

    keel_config_watch_free(w);
    keel_config_unref(next);
    keel_diag_fini(&d);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static void many_resources_load_fast(void **state)
{
    /* 10,000 resources (issue 4: < 1 s); here only correctness of the big load */
    size_t cap = 10000 * 160, len = 0;
    char *y = malloc(cap);
    for (int i = 0; i < 10000; i++)
        len += (size_t)snprintf(y + len, cap - len,
                                "---\napiVersion: v1\nkind: Service\nmetadata: {name: s%d}\nspec:\n  ports: [{name: http, "
                                "port: 80}]\n",
                                i);
    struct keel_diag d;
    struct keel_config *cfg = load_str("big.yaml", y, &d);
    assert_non_null(cfg);
    assert_int_equal(cfg->n_services, 10000);
    assert_non_null(keel_registry_resolve(cfg, "s9999", 5, 80, NULL));
    keel_config_unref(cfg);
    keel_diag_fini(&d);
    free(y);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(failing_reload_keeps_old),
        cmocka_unit_test(many_resources_load_fast),
    };
    return cmocka_run_group_tests_name("config/reload", tests, NULL, NULL);
}
