# Runs one example program and saves what it prints (stdout and stderr) for its
# tutorial page. cmake -D program=... -D output=... -P run_example.cmake
execute_process(COMMAND "${program}"
  OUTPUT_VARIABLE out ERROR_VARIABLE out
  RESULT_VARIABLE rc
  TIMEOUT 120)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${program} failed (${rc}):\n${out}")
endif()
file(WRITE "${output}" "${out}")
