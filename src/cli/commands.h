/* Subcommands of the keel binary: one file each, one row in main.c's table. */
#ifndef KEEL_CLI_COMMANDS_H
#define KEEL_CLI_COMMANDS_H

int keel_cmd_proxy(int argc, char **argv);
int keel_cmd_eval(int argc, char **argv);
int keel_cmd_validate(int argc, char **argv);
int keel_cmd_apply(int argc, char **argv);
int keel_cmd_get(int argc, char **argv);
int keel_cmd_mesh(int argc, char **argv);
int keel_cmd_sample_app(int argc, char **argv);
int keel_cmd_collector(int argc, char **argv);
int keel_cmd_traces(int argc, char **argv);
int keel_cmd_mixer(int argc, char **argv);

/* Parse option --opt's value s as a whole decimal number in min..max (LLONG_MAX: no upper
 * bound) into out: 0, or -1 after telling stderr "keel CMD: --OPT: ...". */
int keel_cli_number(const char *cmd, const char *opt, const char *s, long long min, long long max,
                    long long *out);

#endif
