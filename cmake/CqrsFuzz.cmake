# cqrs_add_fuzzer(<name> SOURCES <files...> [LIBS <targets...>] [SECONDS <n>] [ARGS <libFuzzer flags...>])
#
# Builds a libFuzzer target (clang only) and registers a short ctest run (label `fuzz`) over the
# committed seed corpus fuzz/corpus/<corpus name>/, where <corpus name> is <name> without its
# `_fuzz` suffix. New inputs go to a scratch directory in the build tree, never into the source
# tree. For a long run use .ci/fuzz (see README).

include_guard(GLOBAL)

set(CQRS_FUZZ_SECONDS 5 CACHE STRING "Seconds each fuzzer runs under ctest")

function(cqrs_add_fuzzer name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "SECONDS" "SOURCES;LIBS;ARGS")
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "cqrs_add_fuzzer(${name}): libFuzzer needs clang (use the `fuzz` preset)")
  endif()
  if(NOT arg_SECONDS)
    set(arg_SECONDS ${CQRS_FUZZ_SECONDS})
  endif()
  string(REGEX REPLACE "_fuzz$" "" corpus_name "${name}")
  set(corpus "${PROJECT_SOURCE_DIR}/fuzz/corpus/${corpus_name}")
  set(scratch "${CMAKE_CURRENT_BINARY_DIR}/corpus/${corpus_name}")

  add_executable(${name} ${arg_SOURCES})
  target_link_libraries(${name} PRIVATE ${arg_LIBS} cqrs_warnings)
  target_compile_options(${name} PRIVATE -fsanitize=fuzzer)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  set_property(TARGET ${name} PROPERTY CQRS_FUZZ_ARGS "${arg_ARGS}")

  add_test(NAME ${name}
    COMMAND ${CMAKE_COMMAND} -E env ASAN_OPTIONS=detect_leaks=1
            $<TARGET_FILE:${name}> -max_total_time=${arg_SECONDS} -print_final_stats=1
            ${arg_ARGS} ${scratch} ${corpus})
  set_tests_properties(${name} PROPERTIES LABELS fuzz TIMEOUT 120)
  file(MAKE_DIRECTORY ${scratch})
endfunction()
