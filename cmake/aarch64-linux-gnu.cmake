# SPDX-License-Identifier: MIT
# Cross-compiling for arm64 (Raspberry Pi OS 64-bit, Debian 12) on amd64 Debian with Debian's
# crossbuild-essential-arm64 and the arm64 -dev packages installed multiarch (libfoo-dev:arm64).
# scripts/cross-arm64.sh makes such a root and uses this file:
#   cmake -S . -B build-arm64/cmake -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)

# Libraries are found with pkg-config (CMakeLists.txt): only the arm64 .pc files, never the
# build machine's. PKG_CONFIG_LIBDIR replaces the default search path; the sysroot is /, as
# multiarch keeps both architectures' headers and libraries side by side.
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "")

# Headers and libraries from the arm64 multiarch folders; programs (cmake, python3) are the
# build machine's.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(CMAKE_FIND_ROOT_PATH /)

# ctest runs the arm64 test programs under qemu (user mode: no kernel of its own, the host's
# system calls; the arm64 loader and libraries from /usr/lib/aarch64-linux-gnu).
find_program(SNAPSYNC_QEMU_AARCH64 qemu-aarch64-static qemu-aarch64)
if(SNAPSYNC_QEMU_AARCH64)
    set(CMAKE_CROSSCOMPILING_EMULATOR ${SNAPSYNC_QEMU_AARCH64})
endif()
