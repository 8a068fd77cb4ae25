/* The wisp commands kept outside wisp.c. Each takes the arguments after
 * its name and returns the exit status. */
#ifndef WISP_CLI_H
#define WISP_CLI_H

#include <stdbool.h>
#include <stddef.h>

/* True when the first argument asks for help (--help or -h). */
bool wisp_cli_is_help(int argc, char **argv);
/* Checks the function in dir with wispd's loader and packs it into the
 * bundle file out; *name_version (may be NULL) gets "name version". */
int wisp_cli_pack(const char *dir, const char *out, char **name_version, char *err, size_t errlen);

int wisp_cmd_state(int argc, char **argv);
int wisp_cmd_dlq(int argc, char **argv);
int wisp_cmd_backup(int argc, char **argv);
int wisp_cmd_sensors(int argc, char **argv);
int wisp_cmd_gpio(int argc, char **argv);
int wisp_cmd_keygen(int argc, char **argv);
int wisp_cmd_bundle(int argc, char **argv);
int wisp_cmd_sign(int argc, char **argv);
int wisp_cmd_verify(int argc, char **argv);
int wisp_cmd_unpack(int argc, char **argv);
int wisp_cmd_deploy(int argc, char **argv);
int wisp_cmd_rollout(int argc, char **argv);
int wisp_cmd_devices(int argc, char **argv);
int wisp_cmd_meter(int argc, char **argv);

#endif
