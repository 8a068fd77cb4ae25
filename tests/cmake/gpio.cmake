# The GPIO ports (ports/gpio.c, linux/gpio.c, sim/sim_gpio.c): the linux port
# runs its real code against a fake chip below it (fakes/gpio_fake.c replaces
# ioctl), and the simulated chip.
add_library(wisp_gpio_fake_obj OBJECT fakes/gpio_fake.c)
wisp_unit_test(test_gpio)
target_sources(test_gpio PRIVATE $<TARGET_OBJECTS:wisp_gpio_fake_obj>)
target_link_libraries(test_gpio PRIVATE wispports ${CMAKE_DL_LIBS})

# For integration tests: the same fake to LD_PRELOAD
# (${PROJECT_BINARY_DIR}/tests/libwisp_gpio_fake.so) and a tool that injects
# one edge (${PROJECT_BINARY_DIR}/tests/gpio_fake_edge).
add_library(wisp_gpio_fake SHARED fakes/gpio_fake.c)
target_link_libraries(wisp_gpio_fake PRIVATE ${CMAKE_DL_LIBS})
set_target_properties(wisp_gpio_fake PROPERTIES
  LIBRARY_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
add_executable(gpio_fake_edge fakes/gpio_fake_edge.c)
set_target_properties(gpio_fake_edge PROPERTIES
  RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
