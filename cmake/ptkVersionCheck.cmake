# Fails the configure step when include/ptk/version.hpp and project(VERSION) disagree,
# so a release can never ship a header that reports another version than its package.
function(ptk_check_version_header header)
  file(READ "${header}" text)
  foreach(part MAJOR MINOR PATCH)
    if(NOT text MATCHES "#define PTK_VERSION_${part} ([0-9]+)")
      message(FATAL_ERROR "${header}: PTK_VERSION_${part} not found")
    endif()
    if(NOT CMAKE_MATCH_1 EQUAL PROJECT_VERSION_${part})
      message(FATAL_ERROR "${header}: PTK_VERSION_${part} is ${CMAKE_MATCH_1}, "
        "but project(ptk VERSION ${PROJECT_VERSION}) says ${PROJECT_VERSION_${part}}")
    endif()
  endforeach()
  if(NOT text MATCHES "#define PTK_VERSION_STRING \"${PROJECT_VERSION}\"")
    message(FATAL_ERROR "${header}: PTK_VERSION_STRING is not \"${PROJECT_VERSION}\"")
  endif()
endfunction()
