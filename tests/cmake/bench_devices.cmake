# Baseline for the timer-jitter figures of scripts/bench-devices.sh.
add_executable(wisp-timer-baseline ${CMAKE_CURRENT_SOURCE_DIR}/bench/timer_baseline.c)
