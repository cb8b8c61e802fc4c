# Compile options as INTERFACE targets, linked privately by our own targets only:
#   cqrs_warnings  -Wall -Wextra -Werror (never applied to generated protobuf code)
#   cqrs_sanitize  ASan + UBSan, no recovery; active when CQRS_SANITIZE is ON. Applied to every
#                  target, generated code included, so that the whole program is instrumented.

include_guard(GLOBAL)

add_library(cqrs_warnings INTERFACE)
target_compile_options(cqrs_warnings INTERFACE
  $<$<CXX_COMPILER_ID:GNU,Clang>:-Wall -Wextra -Werror -Wpedantic -Wno-unused-parameter
    -Wno-missing-field-initializers>
  # GCC 12 reports false positives inside Asio's coroutine machinery and std::variant.
  $<$<CXX_COMPILER_ID:GNU>:-Wno-maybe-uninitialized -Wno-mismatched-new-delete>)

add_library(cqrs_sanitize INTERFACE)
if(CQRS_SANITIZE)
  set(_cqrs_san -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
  target_compile_options(cqrs_sanitize INTERFACE ${_cqrs_san})
  target_link_options(cqrs_sanitize INTERFACE ${_cqrs_san})
endif()

# Usage: cqrs_target_defaults(<target>) — warnings + sanitizers for a target of ours.
function(cqrs_target_defaults target)
  target_link_libraries(${target} PRIVATE $<BUILD_INTERFACE:cqrs_warnings> $<BUILD_INTERFACE:cqrs_sanitize>)
endfunction()

# Usage: cqrs_server_allocator(<executable>) — links tcmalloc into a server program when
# CQRS_TCMALLOC is ON (see the top-level CMakeLists.txt).
function(cqrs_server_allocator target)
  if(CQRS_USE_TCMALLOC)
    target_link_libraries(${target} PRIVATE ${CQRS_TCMALLOC_LIBRARY})
  endif()
endfunction()
