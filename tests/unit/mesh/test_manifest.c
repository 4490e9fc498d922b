/* keel mesh: manifests -> deployments, services, ambient namespaces, waypoints; the text
 * kept for the config dir; the plan's ports, env and $(VAR) expansion. */
#include "mesh/mesh.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char BOOK[] = "apiVersion: v1\n"
                           "kind: Namespace\n"
                           "metadata: {name: amb, labels: {istio.io/use-waypoint: wp}}\n"
                           "---\n"
                           "apiVersion: v1\n"
                           "kind: Service\n"
                           "metadata: {name: details}\n"
                           "spec:\n"
                           "  selector: {app: details}\n"
                           "  ports: [{name: http, port: 9080}, {name: grpc, port: 7070}]\n"
                           "---\n"
                           "apiVersion: apps/v1\n"
                           "kind: Deployment\n"
                           "metadata: {name: details-v1}\n"
                           "spec:\n"
                           "  replicas: 2\n"
                           "  template:\n"
                           "    metadata: {labels: {app: details, version: v1}}\n"
                           "    spec:\n"
                           "      serviceAccountName: bookinfo-details\n"
                           "      containers:\n"
                           "      - command: [sh, -c]\n"
                           "        args: ['echo $(PORT) $(GREETING) $$(PORT) $(NOPE)']\n"
                           "        env: [{name: GREETING, value: hi}]\n"
                           "---\n"
                           "apiVersion: networking.istio.io/v1\n"
                           "kind: Gateway\n"
                           "metadata: {name: gw}\n"
                           "spec: {selector: {istio: ingressgateway}}\n"
                           "---\n"
                           "apiVersion: gateway.networking.k8s.io/v1\n"
                           "kind: Gateway\n"
                           "metadata: {name: wp, namespace: amb}\n"
                           "spec: {gatewayClassName: istio-waypoint, listeners: [{name: m, port: "
                           "15008, protocol: HBONE}]}\n";

static char *write_tmp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/keel-mesh-unit-XXXXXX.yaml");
    int fd = mkstemps(path, 5);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static int count_lines(const char *s, size_t n)
{
    int c = 0;
    for (size_t i = 0; i < n; i++)
        c += s[i] == '\n';
    return c;
}

static void reads_the_kinds(void **state)
{
    char *path = write_tmp(BOOK);
    const char *paths[] = {path};
    struct keel_diag d;
    keel_diag_init(&d);
    struct keel_mesh_manifest m;
    assert_int_equal(keel_mesh_manifest_read(&m, paths, 1, &d), 0);
    assert_int_equal(d.errors, 0);
    assert_int_equal(m.n_deploys, 1);
    const struct keel_mesh_deploy *dep = &m.deploys[0];
    assert_string_equal(dep->name, "details-v1");
    assert_string_equal(dep->ns, "default");
    assert_int_equal(dep->replicas, 2);
    assert_string_equal(dep->service_account, "bookinfo-details");
    assert_int_equal(dep->argc, 3);
    assert_string_equal(dep->argv[0], "sh");
    assert_null(dep->argv[3]);
    assert_int_equal(dep->n_env, 1);
    assert_int_equal(dep->n_labels, 2);
    assert_int_equal(m.n_services, 1);
    assert_int_equal(m.services[0].n_ports, 2);
    assert_string_equal(m.services[0].ports[1].name, "grpc");
    assert_true(m.has_ingress);
    assert_int_equal(m.n_waypoints, 1);
    assert_string_equal(keel_mesh_ambient_waypoint(&m, "amb"), "wp");
    assert_null(keel_mesh_ambient_waypoint(&m, "default"));
    /* the config dir's copy: same lines, Deployment blanked, the rest kept (the Namespace
     * too: its istio.io/use-waypoint label is how sidecars find the waypoint) */
    assert_int_equal(m.n_files, 1);
    assert_int_equal(count_lines(m.files[0].text, m.files[0].len), count_lines(BOOK, strlen(BOOK)));
    assert_null(strstr(m.files[0].text, "Deployment"));
    assert_non_null(strstr(m.files[0].text, "kind: Namespace"));
    assert_non_null(strstr(m.files[0].text, "kind: Service\nmetadata: {name: details}\n"));
    assert_non_null(strstr(m.files[0].text, "gatewayClassName: istio-waypoint"));

    /* the plan: a sidecar per replica, the gateway, the waypoint; $(VAR) as kubelet does */
    struct keel_mesh_opts o = {.state_dir = "/tmp/keel-mesh-unit-state", .self_exe = "/bin/true"};
    struct keel_mesh_plan p;
    assert_int_equal(keel_mesh_plan_build(&p, &m, &o), 0);
    assert_int_equal(p.n_comps, 2 * 2 + 2);
    assert_string_equal(p.comps[0].name, "details-v1-0");
    assert_int_equal(p.comps[0].role, KEEL_MESH_APP);
    assert_int_equal(p.comps[1].role, KEEL_MESH_SIDECAR);
    assert_string_equal(p.comps[2].name, "details-v1-1");
    assert_int_equal(p.comps[4].role, KEEL_MESH_GATEWAY);
    assert_int_equal(p.comps[4].outbound, p.gateway_port);
    assert_int_equal(p.comps[5].role, KEEL_MESH_WAYPOINT);
    assert_string_equal(p.comps[5].workload, "wp.amb");
    char want[128];
    snprintf(want, sizeof(want), "echo %d hi $(PORT) $(NOPE)", p.comps[0].app_port);
    assert_string_equal(p.comps[0].argv[2], want);
    snprintf(want, sizeof(want), "HTTP_PROXY=http://127.0.0.1:%d", p.comps[1].outbound);
    bool found = false;
    for (size_t i = 0; p.comps[0].env[i]; i++)
        found |= !strcmp(p.comps[0].env[i], want);
    assert_true(found);
    /* every port distinct, and below the kernel's ephemeral range, where no outgoing
     * connection can take it between the plan and the process binding it */
    int ephemeral_low = 32768;
    FILE *range = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (range != NULL) {
        assert_int_equal(fscanf(range, "%d", &ephemeral_low), 1);
        fclose(range);
    }
    int ports[64];
    size_t n = 0;
    for (size_t i = 0; i < p.n_comps; i++) {
        const struct keel_mesh_comp *c = &p.comps[i];
        int each[] = {c->role == KEEL_MESH_APP ? c->app_port : 0, c->inbound, c->outbound,
                      c->admin};
        for (int k = 0; k < 4; k++)
            if (each[k]) {
                for (size_t j = 0; j < n; j++)
                    assert_int_not_equal(ports[j], each[k]);
                if (ephemeral_low >= 10000 + 1024)
                    assert_in_range(each[k], 10000, ephemeral_low - 1);
                ports[n++] = each[k];
            }
    }
    assert_int_equal(n, 2 * 4 + 2 + 2);
    keel_mesh_plan_free(&p);
    keel_mesh_manifest_free(&m);
    keel_diag_fini(&d);
    unlink(path);
}

static void errors_are_located(void **state)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec:\n  replicas: -1\n",
         ":5:13: error: Deployment a: replicas must be an integer in 0..64"},
        {"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec:\n  template:\n    "
         "spec:\n"
         "      containers: [{image: x}]\n",
         ":7:20: error: Deployment a: container has no command"},
        {"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec:\n  template:\n    "
         "spec:\n"
         "      containers: [{command: sh}]\n",
         ":7:30: error: container command: expected a list of strings"},
        {"apiVersion: apps/v1\nkind: Deployment\nmetadata: {labels: {}}\n",
         ":3:11: error: Deployment without metadata.name"},
        {"apiVersion: v1\nkind: Service\nmetadata: {name: s}\n", ": error: no Deployment found"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *path = write_tmp(cases[i].text);
        const char *paths[] = {path};
        struct keel_diag d;
        keel_diag_init(&d);
        struct keel_mesh_manifest m;
        assert_int_equal(keel_mesh_manifest_read(&m, paths, 1, &d), -1);
        bool found = false;
        for (size_t k = 0; k < d.n; k++)
            found |= strstr(d.msgs[k], cases[i].want) != NULL;
        if (!found)
            for (size_t k = 0; k < d.n; k++)
                fprintf(stderr, "case %zu got: %s\n", i, d.msgs[k]);
        assert_true(found);
        keel_mesh_manifest_free(&m);
        keel_diag_fini(&d);
        unlink(path);
    }
}

/* mesh config mixerReportServer: keel mesh up runs keel mixer on that address */
static void a_named_mixer_is_run(void **state)
{
    char *path = write_tmp("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n"
                           "data:\n  mesh: |-\n    accessLogFile: /dev/stdout\n"
                           "    mixerReportServer: \"127.0.0.1:9091\"\n---\n"
                           "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\nspec:\n"
                           "  template:\n    spec:\n      containers:\n      - name: app\n"
                           "        command: [sh, -c, sleep]\n");
    const char *paths[] = {path};
    struct keel_diag d;
    keel_diag_init(&d);
    struct keel_mesh_manifest m;
    int rc = keel_mesh_manifest_read(&m, paths, 1, &d);
    for (size_t i = 0; i < d.n; i++)
        fprintf(stderr, "%s\n", d.msgs[i]);
    assert_int_equal(rc, 0);
    assert_string_equal(m.mixer_report_server, "127.0.0.1:9091");
    struct keel_mesh_opts o = {.state_dir = "/tmp/keel-mesh-unit-state", .self_exe = "/bin/true"};
    struct keel_mesh_plan p;
    assert_int_equal(keel_mesh_plan_build(&p, &m, &o), 0);
    assert_int_equal(p.n_comps, 3); /* the app, its sidecar, the mixer */
    const struct keel_mesh_comp *x = &p.comps[2];
    assert_int_equal(x->role, KEEL_MESH_MIXER);
    assert_string_equal(x->argv[1], "mixer");
    assert_string_equal(x->argv[3], "127.0.0.1:9091");
    assert_true(x->admin > 0);
    keel_mesh_plan_free(&p);
    keel_mesh_manifest_free(&m);
    keel_diag_fini(&d);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reads_the_kinds),
        cmocka_unit_test(a_named_mixer_is_run),
        cmocka_unit_test(errors_are_located),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
