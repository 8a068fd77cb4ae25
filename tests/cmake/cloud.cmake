# wisp-cloud, the control plane (cloud-sync/server): unit tests against the
# real LMDB store in temp dirs, and an integration test with a real
# mosquitto, curl as the API client and mosquitto_pub/sub as devices.
wisp_unit_test(test_cloud_core)
target_link_libraries(test_cloud_core PRIVATE wispcloud)
wisp_unit_test(test_cloud_rollout)
target_link_libraries(test_cloud_rollout PRIVATE wispcloud)

# Prints chained metering batches for the integration test.
add_executable(cloud_meter_tool unit/cloud_meter_tool.c)
target_link_libraries(cloud_meter_tool PRIVATE wispmeter)

wisp_integration_test(cloud_server)
set_property(TEST cloud_server APPEND PROPERTY ENVIRONMENT
  "WISP_CLOUD=$<TARGET_FILE:wisp-cloud>"
  "WISP_CLOUD_METER_TOOL=$<TARGET_FILE:cloud_meter_tool>")
