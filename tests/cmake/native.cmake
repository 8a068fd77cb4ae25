# Native handlers (runtime/src/engine_native.c, runtime/include/wisp/wisp.h).
# The test libraries in native/ are built into tests/native/NAME.so of the
# build tree (wisp_native_handler comes from examples/CMakeLists.txt).
set(WISP_TEST_NATIVE_DIR ${PROJECT_BINARY_DIR}/tests/native)
set(WISP_TEST_NATIVE_HANDLERS echo fail state abi7 noentry noabi hostile)
foreach(h ${WISP_TEST_NATIVE_HANDLERS})
  wisp_native_handler(test-native-${h} ${WISP_TEST_NATIVE_DIR} ${h}
                      ${CMAKE_CURRENT_SOURCE_DIR}/native/${h}.c)
endforeach()

# The engine in process (and in a confined child): loading, refusals, ctx.
wisp_unit_test(test_engine_native)
target_compile_definitions(test_engine_native PRIVATE
  WISP_TEST_NATIVE_DIR="${WISP_TEST_NATIVE_DIR}")
foreach(h ${WISP_TEST_NATIVE_HANDLERS})
  add_dependencies(test_engine_native test-native-${h})
endforeach()

# End to end: the native example over MQTT, crashing and hanging handlers,
# retries and dead letters, and `wisp run`.
wisp_integration_test(wispd_native)

# The benchmark transform as a native function (scripts/bench.sh builds it).
wisp_native_function(wisp-bench-native-transform ${CMAKE_CURRENT_SOURCE_DIR}/bench/native/transform
                     ${PROJECT_BINARY_DIR}/tests/bench/native/transform LIBS cjson)
