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

#endif
