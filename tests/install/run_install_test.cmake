# run_install_test.cmake: installs a built bnorm into a scratch prefix and uses it as a downstream
# project would. Run as
#   cmake -DBNORM_BUILD_DIR=<build tree> -DBNORM_CONSUMER_SOURCE=<tests/install/consumer>
#         -DBNORM_SCRATCH=<scratch dir> -P run_install_test.cmake
# Steps (any failure stops with FATAL_ERROR naming the step and showing its output):
#   1. remove and recreate BNORM_SCRATCH; cmake --install BNORM_BUILD_DIR --prefix BNORM_SCRATCH/prefix
#   2. configure the consumer with CMAKE_PREFIX_PATH=prefix (find_package(bnorm 0.1 REQUIRED)),
#      build it, run consumer_shared (bnorm::bnorm) and consumer_static (bnorm::bnorm_static)
#   3. an incompatible version request, find_package(bnorm 1.0), must fail to configure
#   4. pkg-config with PKG_CONFIG_PATH=<installed pkgconfig dir>: compile pkgconfig_check.c with
#      cc $(pkg-config --cflags --libs bnorm), run it with LD_LIBRARY_PATH=<installed lib dir>, and
#      check pkg-config's libdir and version against the installed files and the library
cmake_minimum_required(VERSION 3.20)

foreach(var BNORM_BUILD_DIR BNORM_CONSUMER_SOURCE BNORM_SCRATCH)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "install test: pass -D${var}=... (see the header of run_install_test.cmake)")
  endif()
endforeach()

# run(<step> <command...>): runs the command, fails the test on a non-zero exit status or an
# error; leaves stdout+stderr in step_output.
function(run step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc STREQUAL "0")
    string(JOIN " " command ${ARGN})
    message(FATAL_ERROR "install test: step '${step}' failed (exit status: ${rc})\n"
                        "command: ${command}\n--- output ---\n${out}\n--- end of output ---")
  endif()
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

set(prefix "${BNORM_SCRATCH}/prefix")
set(consumer_build "${BNORM_SCRATCH}/consumer-build")

# ---- 1. a fresh scratch directory and the install ---------------------------------------------
file(REMOVE_RECURSE "${BNORM_SCRATCH}")
file(MAKE_DIRECTORY "${BNORM_SCRATCH}")
run("cmake --install" "${CMAKE_COMMAND}" --install "${BNORM_BUILD_DIR}" --prefix "${prefix}")

foreach(header bnorm/bnorm.h bnorm/bnorm.hpp)
  if(NOT EXISTS "${prefix}/include/${header}")
    message(FATAL_ERROR "install test: step 'installed files': ${prefix}/include/${header} is missing")
  endif()
endforeach()
# GNUInstallDirs may have chosen lib, lib64 or lib/<multiarch>: find the files instead of assuming.
file(GLOB_RECURSE pc_files "${prefix}/bnorm.pc")
file(GLOB_RECURSE shared_libs "${prefix}/libbnorm.so")
file(GLOB_RECURSE static_libs "${prefix}/libbnorm.a")
file(GLOB_RECURSE config_files "${prefix}/bnormConfig.cmake")
foreach(kind pc_files shared_libs static_libs config_files)
  list(LENGTH ${kind} count)
  if(NOT count EQUAL 1)
    file(GLOB_RECURSE installed RELATIVE "${prefix}" "${prefix}/*")
    string(JOIN "\n  " installed ${installed})
    message(FATAL_ERROR "install test: step 'installed files': expected one file for ${kind}, found ${count}: "
                        "'${${kind}}'\ninstalled:\n  ${installed}")
  endif()
endforeach()
get_filename_component(pc_dir "${pc_files}" DIRECTORY)
get_filename_component(lib_dir "${shared_libs}" DIRECTORY)

# ---- 2. find_package(bnorm) consumer: shared and static ---------------------------------------
run("configure the consumer (find_package(bnorm 0.1 REQUIRED))"
    "${CMAKE_COMMAND}" -S "${BNORM_CONSUMER_SOURCE}" -B "${consumer_build}"
    "-DCMAKE_PREFIX_PATH=${prefix}" "-DBNORM_EXPECTED_PREFIX=${prefix}" -DBNORM_CONSUMER_REQUIRES=0.1
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_BUILD_TYPE=Release)
run("build the consumer" "${CMAKE_COMMAND}" --build "${consumer_build}")
foreach(variant shared static)
  set(exe "${consumer_build}/consumer_${variant}")
  if(NOT EXISTS "${exe}")
    message(FATAL_ERROR "install test: step 'build the consumer': ${exe} was not built")
  endif()
  run("run consumer_${variant}" "${exe}")
  if(NOT step_output MATCHES "consumer_${variant}: OK")
    message(FATAL_ERROR "install test: step 'run consumer_${variant}': no OK line in its output:\n${step_output}")
  endif()
  message(STATUS "${step_output}")
endforeach()

# ---- 3. an incompatible version request is refused ---------------------------------------------
execute_process(COMMAND "${CMAKE_COMMAND}" -S "${BNORM_CONSUMER_SOURCE}" -B "${BNORM_SCRATCH}/consumer-1.0"
                        "-DCMAKE_PREFIX_PATH=${prefix}" -DBNORM_CONSUMER_REQUIRES=1.0
                        -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(rc STREQUAL "0")
  message(FATAL_ERROR "install test: step 'find_package(bnorm 1.0) must fail': it configured:\n${out}")
endif()
if(NOT out MATCHES "compatible[ \t\r\n]+with[ \t\r\n]+requested[ \t\r\n]+version")
  message(FATAL_ERROR "install test: step 'find_package(bnorm 1.0) must fail': it failed, but not because of "
                      "the version:\n${out}")
endif()

# ---- 4. pkg-config ---------------------------------------------------------------------------
find_program(PKG_CONFIG_EXECUTABLE pkg-config)
if(NOT PKG_CONFIG_EXECUTABLE)
  message(FATAL_ERROR "install test: step 'pkg-config': pkg-config is not installed (apt-get install pkg-config)")
endif()
find_program(C_COMPILER NAMES cc gcc clang)
if(NOT C_COMPILER)
  message(FATAL_ERROR "install test: step 'pkg-config': no C compiler (cc) found")
endif()
set(pkg_env "${CMAKE_COMMAND}" -E env "PKG_CONFIG_PATH=${pc_dir}" --unset=PKG_CONFIG_LIBDIR
            --unset=PKG_CONFIG_SYSROOT_DIR)

run("pkg-config --cflags --libs bnorm" ${pkg_env} "${PKG_CONFIG_EXECUTABLE}" --cflags --libs bnorm)
string(STRIP "${step_output}" flags)
separate_arguments(flags UNIX_COMMAND "${flags}")

# The libdir pkg-config reports must be where libbnorm.so actually is (bnorm.pc derives it from
# its own location; a wrong relative path shows here rather than as a link error elsewhere).
run("pkg-config --variable=libdir bnorm" ${pkg_env} "${PKG_CONFIG_EXECUTABLE}" --variable=libdir bnorm)
string(STRIP "${step_output}" pc_libdir)
file(REAL_PATH "${pc_libdir}" pc_libdir_real)
file(REAL_PATH "${lib_dir}" lib_dir_real)
if(NOT pc_libdir_real STREQUAL lib_dir_real)
  message(FATAL_ERROR "install test: step 'pkg-config libdir': bnorm.pc says libdir=${pc_libdir} "
                      "(${pc_libdir_real}) but libbnorm.so is installed in ${lib_dir_real}")
endif()
run("pkg-config --variable=includedir bnorm" ${pkg_env} "${PKG_CONFIG_EXECUTABLE}" --variable=includedir bnorm)
string(STRIP "${step_output}" pc_includedir)
if(NOT EXISTS "${pc_includedir}/bnorm/bnorm.h")
  message(FATAL_ERROR "install test: step 'pkg-config includedir': bnorm.pc says includedir=${pc_includedir}, "
                      "which has no bnorm/bnorm.h")
endif()
run("pkg-config --modversion bnorm" ${pkg_env} "${PKG_CONFIG_EXECUTABLE}" --modversion bnorm)
string(STRIP "${step_output}" pc_version)

set(pkg_exe "${BNORM_SCRATCH}/pkgconfig_check")
run("compile pkgconfig_check.c with cc $(pkg-config --cflags --libs bnorm)"
    "${C_COMPILER}" -std=c99 -Wall -Wextra -Wpedantic -Werror "${BNORM_CONSUMER_SOURCE}/pkgconfig_check.c"
    -o "${pkg_exe}" ${flags})
run("run pkgconfig_check" "${CMAKE_COMMAND}" -E env "LD_LIBRARY_PATH=${lib_dir}" "${pkg_exe}")
if(NOT step_output MATCHES "bnorm_version=([0-9.]+)")
  message(FATAL_ERROR "install test: step 'run pkgconfig_check': no version line in its output:\n${step_output}")
endif()
if(NOT CMAKE_MATCH_1 STREQUAL pc_version)
  message(FATAL_ERROR "install test: step 'pkg-config version': pkg-config --modversion says ${pc_version} but "
                      "the library says ${CMAKE_MATCH_1}")
endif()

message(STATUS "install test: OK (prefix ${prefix}, libdir ${lib_dir}, bnorm ${pc_version})")
