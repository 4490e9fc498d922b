/* Subcommands of the keel binary: one file each, one row in main.c's table. */
#ifndef KEEL_CLI_COMMANDS_H
#define KEEL_CLI_COMMANDS_H

int keel_cmd_proxy(int argc, char **argv);

#endif
