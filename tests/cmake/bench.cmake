# Benchmark: the hand-written relay baseline and the closed-loop load generator
# (scripts/bench.sh runs the full benchmark; it prints figures, it is not a test).
# Both are standalone Paho MQTTAsync + cJSON programs, always optimized so that
# the baseline is a fair one whatever the build type.
foreach(bench relay loadgen)
  add_executable(wisp-${bench} ${CMAKE_CURRENT_SOURCE_DIR}/bench/${bench}.c)
  target_link_libraries(wisp-${bench} PRIVATE eclipse-paho-mqtt-c::paho-mqtt3as cjson m)
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
