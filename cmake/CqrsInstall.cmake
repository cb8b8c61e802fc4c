# Install rules and the CMake package: an outside project does
#   find_package(cqrs CONFIG REQUIRED)
#   target_link_libraries(app PRIVATE cqrs::net)   # or cqrs::core, cqrs::proto

include_guard(GLOBAL)
include(CMakePackageConfigHelpers)

set(CQRS_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/cqrs")

install(TARGETS cqrs_proto cqrs_core cqrs_net
  EXPORT cqrsTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

install(DIRECTORY ${PROJECT_SOURCE_DIR}/core/include/ ${PROJECT_SOURCE_DIR}/net/include/
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${CQRS_PROTO_GEN_DIR}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.pb.h")
install(DIRECTORY ${PROJECT_SOURCE_DIR}/proto/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.proto")

install(EXPORT cqrsTargets NAMESPACE cqrs:: DESTINATION ${CQRS_INSTALL_CMAKEDIR})

configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/cqrsConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/cqrsConfig.cmake
  INSTALL_DESTINATION ${CQRS_INSTALL_CMAKEDIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/cqrsConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/cqrsConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/cqrsConfigVersion.cmake
  DESTINATION ${CQRS_INSTALL_CMAKEDIR})
