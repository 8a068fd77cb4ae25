# The sensor ports (ports/): IIO, 1-Wire and thermal zones against fake sysfs
# trees, the simulated sensors, and configured-sensor settings.
wisp_unit_test(test_ports)
target_link_libraries(test_ports PRIVATE wispports)
