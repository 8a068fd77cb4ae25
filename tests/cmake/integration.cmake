# End-to-end tests of wispd and wisp: real mosquitto, real processes, real signals.
foreach(t wisp_cli wispd_basic wispd_hostile wispd_reload wispd_drain wispd_payloads
          wispd_broker_restart wispd_tls wispd_scaling wispd_drain_stream)
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/integration/${t}.sh)
    wisp_integration_test(${t})
  endif()
endforeach()

# The durable path (issue: durable state and exactly-once effects).
wisp_integration_test(wispd_state)
wisp_integration_test(wispd_drain_durable)
wisp_integration_test(wispd_outage)
wisp_integration_test(wispd_exactly_once)
set_tests_properties(wispd_outage wispd_exactly_once PROPERTIES LABELS "integration;slow")
