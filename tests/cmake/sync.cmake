# Fleet sync (cloud-sync/): function bundles and their signatures, through
# the library and through the wisp CLI (with openssl interop).
wisp_unit_test(test_bundle)
target_link_libraries(test_bundle PRIVATE wispsync)
wisp_integration_test(wisp_bundle)
