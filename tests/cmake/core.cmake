# The supervisor-side core (runtime/src/config.c, ipc.c, subs.c, pool*.c,
# executor.c): settings, the executor protocol, subscriptions, the pool
# driving real executor processes, and executor confinement.
wisp_unit_test(test_config)
wisp_unit_test(test_ipc)
wisp_unit_test(test_loop)
wisp_unit_test(test_subs)
wisp_unit_test(test_executor)
wisp_unit_test(test_pool unit/pool_harness.c)
wisp_unit_test(test_pool_lifecycle unit/pool_harness.c)
