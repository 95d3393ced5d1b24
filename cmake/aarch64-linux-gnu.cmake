# Cross-compiling for 64-bit ARM with Debian's cross toolchain
# (crossbuild-essential-arm64 and the :arm64 -dev packages, multiarch); the
# test programs run under qemu-user (scripts/test-aarch64.sh).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
# The programs start through the target's dynamic loader: qemu-user 7.2
# loading a dynamic executable itself leaves its threads hanging at their
# first pthread_create (seen with Debian 12's qemu-user and glibc 2.36).
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1
    --library-path /usr/aarch64-linux-gnu/lib:/usr/lib/aarch64-linux-gnu)
