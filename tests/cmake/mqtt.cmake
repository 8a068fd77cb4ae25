# The MQTT client (runtime/src/mqtt.c) against a real mosquitto, and the
# shared C test-broker helper other C integration tests can link.

add_library(wisptestbroker STATIC lib/testbroker.c)
target_include_directories(wisptestbroker PUBLIC lib)
# Its certificate helper runs tls_make_certs from broker.sh.
target_compile_definitions(wisptestbroker PRIVATE
  WISP_BROKER_SH="${CMAKE_CURRENT_SOURCE_DIR}/lib/broker.sh")

add_executable(mqtt_client integration/mqtt_client.c integration/mqtt_harness.c)
target_link_libraries(mqtt_client PRIVATE wispcore wispcheck wisptestbroker)
add_test(NAME mqtt_client COMMAND mqtt_client)
# The whole run takes well under a minute; the timeout only catches a hang.
set_tests_properties(mqtt_client PROPERTIES LABELS "integration" TIMEOUT 120
  ENVIRONMENT "WISP_SOURCE_DIR=${PROJECT_SOURCE_DIR};WISP_BUILD_DIR=${PROJECT_BINARY_DIR}")
