# function.json parsing and MQTT topic rules (runtime/src/fnspec*.c, topic.c,
# trigger_*.c).
wisp_unit_test(test_fnspec)
wisp_unit_test(test_fnspec_load)
wisp_unit_test(test_triggers)
wisp_unit_test(test_topic)

# libFuzzer needs clang. The target compiles the parser's sources itself so
# that they carry the fuzzer's coverage instrumentation; wispcore does not.
if(CMAKE_C_COMPILER_ID STREQUAL "Clang")
  set(WISP_FUZZ_FLAGS -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer)
  # wisp_fuzz_target(NAME CORPUS SOURCES...): a libFuzzer target run for 20 s
  # by the suite on fuzz/corpus/CORPUS. libFuzzer adds what it finds to the
  # first corpus directory: it gets a copy in the build tree, so that the
  # checked-in seeds stay as they are.
  function(wisp_fuzz_target name corpus)
    add_executable(${name} ${ARGN})
    target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/runtime/src)
    target_compile_options(${name} PRIVATE ${WISP_FUZZ_FLAGS})
    target_link_options(${name} PRIVATE ${WISP_FUZZ_FLAGS})
    set(work ${CMAKE_CURRENT_BINARY_DIR}/${name}_corpus)
    file(MAKE_DIRECTORY ${work})
    add_test(NAME ${name}
      COMMAND ${name} -max_total_time=20 -timeout=10 -rss_limit_mb=2048
              -max_len=4096 -print_final_stats=1
              ${work} ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/${corpus})
    set_tests_properties(${name} PROPERTIES LABELS "fuzz" TIMEOUT 120)
  endfunction()

  wisp_fuzz_target(fuzz_fnspec fnspec
    fuzz/fuzz_fnspec.c
    ${PROJECT_SOURCE_DIR}/runtime/src/fnspec.c
    ${PROJECT_SOURCE_DIR}/runtime/src/fnspec_json.c
    ${PROJECT_SOURCE_DIR}/runtime/src/fnspec_load.c
    ${PROJECT_SOURCE_DIR}/runtime/src/trigger_mqtt.c
    ${PROJECT_SOURCE_DIR}/runtime/src/trigger_timer.c
    ${PROJECT_SOURCE_DIR}/runtime/src/trigger_sensor.c
    ${PROJECT_SOURCE_DIR}/runtime/src/trigger_gpio.c
    ${PROJECT_SOURCE_DIR}/runtime/src/schedule.c
    ${PROJECT_SOURCE_DIR}/runtime/src/topic.c
    ${PROJECT_SOURCE_DIR}/runtime/src/util.c)
  target_link_libraries(fuzz_fnspec PRIVATE cjson)

  # The fleet protocol's parsers of untrusted input (tests/fuzz/fuzz_fleet.c):
  # the agent's and the control plane's message parsers, compiled here for
  # coverage; the rest (util, log, rollouts, ...) comes from the libraries,
  # whose copies of these files are then not linked in.
  set(WISP_SYNC_DIR ${PROJECT_SOURCE_DIR}/cloud-sync)
  wisp_fuzz_target(fuzz_fleet fleet
    fuzz/fuzz_fleet.c
    ${WISP_SYNC_DIR}/agent/agent_active.c
    ${WISP_SYNC_DIR}/agent/agent_bundle.c
    ${WISP_SYNC_DIR}/agent/agent_desired.c
    ${WISP_SYNC_DIR}/agent/agent_meter.c
    ${WISP_SYNC_DIR}/server/cloud.c
    ${WISP_SYNC_DIR}/server/cloud_labels.c
    ${WISP_SYNC_DIR}/server/cloud_meter.c
    ${WISP_SYNC_DIR}/server/cloud_msg.c)
  target_include_directories(fuzz_fleet PRIVATE
    ${WISP_SYNC_DIR}/agent ${WISP_SYNC_DIR}/server ${WISP_SYNC_DIR}/common)
  target_link_libraries(fuzz_fleet PRIVATE wispcloud cjson)
endif()
