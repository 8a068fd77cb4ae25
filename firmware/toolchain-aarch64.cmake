# CMake toolchain file: build Wisp for aarch64 (64-bit Raspberry Pi OS, Debian arm64)
# on a Debian x86-64 host with Debian's cross compiler and :arm64 multiarch packages.
#
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=firmware/toolchain-aarch64.cmake
#
# Needs gcc-aarch64-linux-gnu, qemu-user (for ctest) and the :arm64 -dev packages
# (scripts/cross-test.sh arm64 installs them). Libraries and CMake/pkg-config
# files come from /usr/lib/aarch64-linux-gnu, headers from /usr/include
# (multiarch keeps both architectures side by side there, so the sysroot is "/").

set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(WISP_CROSS_TRIPLET aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${WISP_CROSS_TRIPLET}-gcc)
set(CMAKE_CXX_COMPILER ${WISP_CROSS_TRIPLET}-g++)
# Multiarch directory: find_library/find_package then look in /usr/lib/aarch64-linux-gnu
# (and its cmake/ subfolder), never in the host's /usr/lib/x86_64-linux-gnu.
set(CMAKE_LIBRARY_ARCHITECTURE ${WISP_CROSS_TRIPLET})

# Search the target's paths for libraries, headers and packages; host tools
# (pkg-config, bash) still come from the host.
set(CMAKE_FIND_ROOT_PATH /usr/${WISP_CROSS_TRIPLET} /)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# pkg-config: only the target's .pc files (lua5.4, lua5.4-cjson) plus the
# architecture-independent ones. The toolchain file is read on every configure
# run, so these hold for re-runs of cmake too.
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/${WISP_CROSS_TRIPLET}/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "")

# ctest (and add_test commands naming a target) run target binaries under
# qemu-user. -L picks the root qemu resolves the dynamic loader and libraries
# in. The loader and libc.so.6 must come from the same glibc build: when the
# :arm64 libc6 is installed (the -dev packages pull it in), its loader
# /lib/ld-linux-aarch64.so.1 is used with -L /. With -L /usr/aarch64-linux-gnu
# the cross package's loader (libc6-arm64-cross, an older Debian revision)
# would load the multiarch libc.so.6 from /lib/aarch64-linux-gnu, and a
# forked child then hangs in glibc. Without the :arm64 libc6 only the cross
# C library is there, so -L /usr/aarch64-linux-gnu.
if(EXISTS /lib/ld-linux-aarch64.so.1)
  set(WISP_QEMU_PREFIX /)
else()
  set(WISP_QEMU_PREFIX /usr/${WISP_CROSS_TRIPLET})
endif()
find_program(WISP_QEMU_AARCH64 qemu-aarch64)
if(WISP_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${WISP_QEMU_AARCH64} -L ${WISP_QEMU_PREFIX})
endif()
