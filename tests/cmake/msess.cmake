# The durable MQTT session (runtime/src/msess.c, mqtt_codec.c) against a
# real mosquitto, a scripted fake broker and fuzzed packets.
add_executable(test_msess integration/test_msess.c)
target_link_libraries(test_msess PRIVATE wispcore wispcheck wisptestbroker)
add_test(NAME test_msess COMMAND test_msess)
# The run takes about half a minute; the timeout only catches a hang.
set_tests_properties(test_msess PROPERTIES LABELS "integration" TIMEOUT 120
  ENVIRONMENT "WISP_SOURCE_DIR=${PROJECT_SOURCE_DIR};WISP_BUILD_DIR=${PROJECT_BINARY_DIR}")
