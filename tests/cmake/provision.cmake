# First-boot provisioning (firmware/provision/): wisp-provision run as a
# program on temp trees, its output checked with mbedTLS and wispd's own
# config parser. The program is only built when firmware/ is part of the
# build (added before tests/).
if(TARGET wisp-provision)
  wisp_unit_test(test_provision)
  target_include_directories(test_provision SYSTEM PRIVATE ${WISP_MBEDTLS_INCLUDE_DIR})
  target_link_libraries(test_provision PRIVATE cjson ${WISP_MBEDX509_LIBRARY}
                        ${WISP_MBEDCRYPTO_LIBRARY})
  add_dependencies(test_provision wisp-provision)
  set_property(TEST test_provision APPEND PROPERTY
               ENVIRONMENT "WISP_PROVISION=$<TARGET_FILE:wisp-provision>")
endif()
