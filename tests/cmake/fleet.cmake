# The fleet end to end: wisp-cloud, wispd devices with cloud sync and the
# wisp CLI's fleet commands, through a real mosquitto.
wisp_integration_test(fleet_e2e)
set_property(TEST fleet_e2e APPEND PROPERTY ENVIRONMENT "WISP_CLOUD_BIN=$<TARGET_FILE:wisp-cloud>"
  "WISP_PROVISION=$<TARGET_FILE:wisp-provision>")
set_property(TEST fleet_e2e APPEND PROPERTY LABELS fleet)
