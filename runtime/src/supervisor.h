/*
 * wispd's supervisor: owns the event loop, the MQTT connection, the zygote
 * and the executor pool; handles SIGTERM/SIGINT (drain and exit 0), SIGHUP
 * (reload the functions folder) and SIGUSR1 (log counters).
 */
#ifndef WISP_SUPERVISOR_H
#define WISP_SUPERVISOR_H

#include "config.h"

/* Runs until asked to stop. Returns the process exit code. Borrows cfg. */
int wisp_supervisor_run(const struct wisp_config *cfg);

#endif
