# Finds every third-party dependency. A missing one stops the configure step with the name of
# the Debian (bookworm) package that provides it.

include_guard(GLOBAL)

macro(cqrs_require found what package)
  if(NOT ${found})
    message(FATAL_ERROR
      "cqrs: ${what} was not found. Install it with:\n"
      "    apt-get install ${package}\n"
      "(or run: bash .ci/install-deps)")
  endif()
endmacro()

find_package(Threads REQUIRED)

find_package(Protobuf 3.21 QUIET)
cqrs_require(Protobuf_FOUND "protobuf >= 3.21 (library and protoc)" "libprotobuf-dev protobuf-compiler")
if(NOT Protobuf_PROTOC_EXECUTABLE)
  cqrs_require(FALSE "protoc" "protobuf-compiler")
endif()

find_package(absl CONFIG QUIET)
cqrs_require(absl_FOUND "Abseil" "libabsl-dev")

# Debian ships Boost 1.74 as libboost-dev; Asio's awaitable operators and Beast need 1.81.
# Boost.URL (ws:// URLs of the event subscriber) is a compiled library of its own.
find_package(Boost 1.81 CONFIG QUIET COMPONENTS url)
cqrs_require(Boost_FOUND "Boost 1.81 (Asio, Beast, URL)" "libboost1.81-dev libboost-url1.81-dev")

if(CQRS_BUILD_TESTS)
  find_package(GTest CONFIG QUIET)
  cqrs_require(GTest_FOUND "GoogleTest" "libgtest-dev libgmock-dev")
  find_package(benchmark CONFIG QUIET)
  cqrs_require(benchmark_FOUND "Google Benchmark" "libbenchmark-dev")
endif()

# Sanitizers bring their own allocator: tcmalloc only for uninstrumented builds.
set(CQRS_USE_TCMALLOC OFF)
if(CQRS_TCMALLOC AND NOT CQRS_SANITIZE AND NOT CQRS_BUILD_FUZZERS)
  find_library(CQRS_TCMALLOC_LIBRARY NAMES tcmalloc_minimal)
  cqrs_require(CQRS_TCMALLOC_LIBRARY "tcmalloc (or configure with -DCQRS_TCMALLOC=OFF)"
    "libgoogle-perftools-dev")
  set(CQRS_USE_TCMALLOC ON)
endif()
