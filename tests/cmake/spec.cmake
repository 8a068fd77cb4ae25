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
  add_executable(fuzz_fnspec
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
  target_include_directories(fuzz_fnspec PRIVATE ${PROJECT_SOURCE_DIR}/runtime/src)
  target_compile_options(fuzz_fnspec PRIVATE ${WISP_FUZZ_FLAGS})
  target_link_options(fuzz_fnspec PRIVATE ${WISP_FUZZ_FLAGS})
  target_link_libraries(fuzz_fnspec PRIVATE cjson)

  # libFuzzer adds what it finds to the first corpus directory: give it a
  # copy in the build tree so that the checked-in seeds stay as they are.
  set(WISP_FNSPEC_CORPUS ${CMAKE_CURRENT_BINARY_DIR}/fuzz_fnspec_corpus)
  file(MAKE_DIRECTORY ${WISP_FNSPEC_CORPUS})
  add_test(NAME fuzz_fnspec
    COMMAND fuzz_fnspec -max_total_time=20 -timeout=10 -rss_limit_mb=2048
            -max_len=4096 -print_final_stats=1
            ${WISP_FNSPEC_CORPUS} ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/fnspec)
  set_tests_properties(fuzz_fnspec PROPERTIES LABELS "fuzz" TIMEOUT 120)

  # The fleet protocol's parsers of untrusted input (tests/fuzz/fuzz_fleet.c):
  # the agent's and the control plane's message parsers, compiled here for
  # coverage; the rest (util, log, rollouts, ...) comes from the libraries,
  # whose copies of these files are then not linked in.
  set(WISP_SYNC_DIR ${PROJECT_SOURCE_DIR}/cloud-sync)
  add_executable(fuzz_fleet
    fuzz/fuzz_fleet.c
    ${WISP_SYNC_DIR}/agent/agent_active.c
    ${WISP_SYNC_DIR}/agent/agent_bundle.c
    ${WISP_SYNC_DIR}/agent/agent_desired.c
    ${WISP_SYNC_DIR}/agent/agent_meter.c
    ${WISP_SYNC_DIR}/server/cloud.c
    ${WISP_SYNC_DIR}/server/cloud_labels.c
    ${WISP_SYNC_DIR}/server/cloud_meter.c
    ${WISP_SYNC_DIR}/server/cloud_msg.c)
  target_include_directories(fuzz_fleet PRIVATE ${PROJECT_SOURCE_DIR}/runtime/src
    ${WISP_SYNC_DIR}/agent ${WISP_SYNC_DIR}/server ${WISP_SYNC_DIR}/common)
  target_compile_options(fuzz_fleet PRIVATE ${WISP_FUZZ_FLAGS})
  target_link_options(fuzz_fleet PRIVATE ${WISP_FUZZ_FLAGS})
  target_link_libraries(fuzz_fleet PRIVATE wispcloud cjson)

  set(WISP_FLEET_CORPUS ${CMAKE_CURRENT_BINARY_DIR}/fuzz_fleet_corpus)
  file(MAKE_DIRECTORY ${WISP_FLEET_CORPUS})
  add_test(NAME fuzz_fleet
    COMMAND fuzz_fleet -max_total_time=20 -timeout=10 -rss_limit_mb=2048
            -max_len=4096 -print_final_stats=1
            ${WISP_FLEET_CORPUS} ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/fleet)
  set_tests_properties(fuzz_fleet PROPERTIES LABELS "fuzz" TIMEOUT 120)
endif()
