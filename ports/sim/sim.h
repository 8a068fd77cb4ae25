/* Simulated sensors (port "sim"): test hooks. */
#ifndef WISP_PORT_SIM_H
#define WISP_PORT_SIM_H

#include <stdint.h>

/* Test hook: the realtime clock (ns) sim sensors opened from now on use;
 * NULL restores the real one. Not thread-safe; for tests only. */
void wisp_sim_test_set_clock(uint64_t (*clock)(void));

#endif
