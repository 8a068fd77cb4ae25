# Timers, sensors and GPIO (runtime/src/devcall.c, devices.c, sources.c,
# trigger_*.c): device calls from executors, and wispd end to end.
wisp_unit_test(test_devcall)
wisp_integration_test(wispd_devices)
wisp_integration_test(wispd_gpio)
wisp_integration_test(wispd_timer_drift)
set_tests_properties(wispd_timer_drift PROPERTIES LABELS "integration;slow")
wisp_integration_test(wispd_slow_sensor)
