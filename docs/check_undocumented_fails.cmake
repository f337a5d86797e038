# Runs ptk's own Doxyfile over its public headers plus one header declaring an
# undocumented function in namespace ptk. Passes only if doxygen fails and names it,
# and if the unmodified configuration passes on the same headers.
file(REMOVE_RECURSE "${work}")
file(MAKE_DIRECTORY "${work}/include/ptk")
file(WRITE "${work}/include/ptk/undocumented.hpp"
  "/// @file\n/// @brief A header with one undocumented public function.\n#pragma once\n"
  "namespace ptk {\nint ptk_forgot_to_document_me(int x);\n}  // namespace ptk\n")

file(READ "${doxyfile}" base)
function(run_doxygen name extra_input out_rc out_log)
  file(WRITE "${work}/Doxyfile.${name}"
    "${base}\nOUTPUT_DIRECTORY = \"${work}/out-${name}\"\nGENERATE_TREEVIEW = NO\nSEARCHENGINE = NO\n"
    "INPUT = \"${source_dir}/include/ptk\" ${extra_input}\n")
  execute_process(COMMAND "${doxygen}" "${work}/Doxyfile.${name}"
    WORKING_DIRECTORY "${work}" RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(${out_rc} "${rc}" PARENT_SCOPE)
  set(${out_log} "${out}${err}" PARENT_SCOPE)
endfunction()

run_doxygen(clean "" rc log)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the unmodified docs configuration fails on ptk's headers:\n${log}")
endif()

run_doxygen(undocumented "\"${work}/include/ptk/undocumented.hpp\"" rc log)
if(rc EQUAL 0)
  message(FATAL_ERROR "doxygen accepted an undocumented public function:\n${log}")
endif()
if(NOT log MATCHES "ptk_forgot_to_document_me[^\n]*is not documented")
  message(FATAL_ERROR "doxygen failed, but not for the undocumented function:\n${log}")
endif()
message(STATUS "doxygen rejected the undocumented function as expected")
