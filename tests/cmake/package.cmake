# The Debian package and the Raspberry Pi OS image overlay (firmware/).
#   deb_package: cpack builds the .deb from this build dir, then dpkg -i /
#                -i again / -r / -P for real (root only, skipped otherwise:
#                exit 77), wispd from the installed files, and the unit under
#                systemd. RUN_SERIAL: it installs a system package and creates
#                a system user, which no other test may see half done.
#   deb_cloud:   the same for the package wisp-cloud (the control plane),
#                built by the same cpack run; RUN_SERIAL for the same reason.
#   overlay:     firmware/make-overlay.sh on scratch directories.
# Not in sanitizer builds: the package is made from the plain build.
if(NOT WISP_SANITIZE)
  wisp_integration_test(deb_package)
  set_tests_properties(deb_package PROPERTIES LABELS "integration;package"
    TIMEOUT 600 SKIP_RETURN_CODE 77 RUN_SERIAL TRUE)
  set_property(TEST deb_package APPEND PROPERTY ENVIRONMENT "WISP_VERSION=${PROJECT_VERSION}")

  wisp_integration_test(deb_cloud)
  set_tests_properties(deb_cloud PROPERTIES LABELS "integration;package"
    TIMEOUT 600 SKIP_RETURN_CODE 77 RUN_SERIAL TRUE)
  set_property(TEST deb_cloud APPEND PROPERTY ENVIRONMENT "WISP_VERSION=${PROJECT_VERSION}")

  wisp_integration_test(overlay)
  set_tests_properties(overlay PROPERTIES LABELS "integration;package" SKIP_RETURN_CODE 77)
endif()
