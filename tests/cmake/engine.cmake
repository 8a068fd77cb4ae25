# The Lua engine and its sandbox (runtime/src/engine_lua.c, sandbox_lua.c).
wisp_unit_test(test_engine_lua)
wisp_unit_test(test_sandbox)
wisp_unit_test(test_state)
