# cmake -D build_dir=<ptk build> -D prefix=<dir> -P install_to.cmake
# Installs into an empty prefix, so a header missing from the install rules shows.
file(REMOVE_RECURSE "${prefix}")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${build_dir}" --prefix "${prefix}"
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed (${rc})")
endif()
foreach(f share/cmake/ptk/ptkConfig.cmake share/cmake/ptk/ptkConfigVersion.cmake
          share/cmake/ptk/ptkTargets.cmake include/ptk/ptk.hpp)
  if(NOT EXISTS "${prefix}/${f}")
    message(FATAL_ERROR "install is missing ${f}")
  endif()
endforeach()
