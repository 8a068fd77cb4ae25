/* The wisp commands kept outside wisp.c. Each takes the arguments after
 * its name and returns the exit status. */
#ifndef WISP_CLI_H
#define WISP_CLI_H

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
