# The device agent (cloud-sync/agent/): its parsers and arithmetic as unit
# tests, and wispd against a real mosquitto with the control plane played
# by mosquitto_pub.
wisp_unit_test(test_agent)
target_include_directories(test_agent PRIVATE ${PROJECT_SOURCE_DIR}/cloud-sync/agent)
wisp_integration_test(agent_device)
wisp_integration_test(agent_tls)
