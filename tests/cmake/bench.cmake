# Benchmark: the hand-written relay baseline, the ceiling client and the
# closed-loop load generator (scripts/bench.sh runs the full benchmark; it
# prints figures, it is not a test).
# The relay is a standalone Paho MQTTAsync + cJSON program; the load generator
# runs on the runtime's own single-threaded MQTT client and event loop
# (msess.c, loop.c from wispcore) so that it costs the measured programs as
# little CPU as it can. The ceiling client is the transform on that same
# client with nothing else (no store, no handler process): what the broker and
# the load generator leave for any client. All are always optimized, whatever
# the build type.
add_executable(wisp-relay ${CMAKE_CURRENT_SOURCE_DIR}/bench/relay.c)
target_link_libraries(wisp-relay PRIVATE eclipse-paho-mqtt-c::paho-mqtt3as cjson m)
add_executable(wisp-loadgen ${CMAKE_CURRENT_SOURCE_DIR}/bench/loadgen.c)
target_link_libraries(wisp-loadgen PRIVATE wispcore cjson m)
add_executable(wisp-ceiling ${CMAKE_CURRENT_SOURCE_DIR}/bench/ceiling.c)
target_link_libraries(wisp-ceiling PRIVATE wispcore cjson m)
foreach(bench relay loadgen ceiling)
  if(NOT CMAKE_BUILD_TYPE MATCHES "^(Release|RelWithDebInfo|MinSizeRel)$")
    target_compile_options(wisp-${bench} PRIVATE -O2)
  endif()
endforeach()

# One smoke test: relay + loadgen for about a second against a private
# mosquitto; checks only that messages flowed, never a speed.
add_test(NAME bench_smoke
  COMMAND bash ${PROJECT_SOURCE_DIR}/scripts/bench.sh --smoke)
set_tests_properties(bench_smoke PROPERTIES LABELS "bench" TIMEOUT 60
  ENVIRONMENT "WISP_SOURCE_DIR=${PROJECT_SOURCE_DIR};WISP_BUILD_DIR=${PROJECT_BINARY_DIR};WISP_RELAY=$<TARGET_FILE:wisp-relay>;WISP_LOADGEN=$<TARGET_FILE:wisp-loadgen>")
