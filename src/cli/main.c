/* keel: one binary, several roles (DESIGN.md "Roles"). Adding a subcommand is one file
 * in src/cli/ plus one row here. */
#include "cli/commands.h"

#include "version.h"

#include <stdio.h>
#include <string.h>

static int version(int argc, char **argv)
{
    printf("keel %s (commit %s)\n", KEEL_VERSION, KEEL_COMMIT);
    return 0;
}

static const struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} commands[] = {
    { "proxy", keel_cmd_proxy, "run the sidecar proxy (inbound + outbound listeners)" },
    { "mesh", keel_cmd_mesh, "run a local mesh from Kubernetes manifests (mesh up, mesh status)" },
    { "mixer", keel_cmd_mixer, "Mixer's Report API (gRPC) running the Mixer rules centrally" },
    { "eval", keel_cmd_eval, "evaluate a CEXL or CEL expression over attributes" },
    { "validate", keel_cmd_validate, "check config files: errors as FILE:LINE:COL" },
    { "apply", keel_cmd_apply, "validate a file and write it atomically into a config dir" },
    { "get", keel_cmd_get, "list the resources of a config dir (kubectl-like table)" },
    { "sample-app", keel_cmd_sample_app, "run the demo HTTP service of the local mesh" },
    { "collector", keel_cmd_collector, "run a Zipkin-compatible trace collector (:9411)" },
    { "traces", keel_cmd_traces, "print traces from a collector as trees" },
    { "version", version, "print the version and the commit built from (also --version)" },
};

static int usage(FILE *out)
{
    fprintf(out, "usage: keel COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(out, "\nkeel COMMAND --help shows a command's options.\n");
    return out == stderr ? 2 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr);
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V"))
        return version(argc - 1, argv + 1);
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help"))
        return usage(stdout);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "keel: unknown command '%s'\n\n", argv[1]);
    return usage(stderr);
}
