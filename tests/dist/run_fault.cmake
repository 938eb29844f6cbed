# run_fault.cmake: runs fault_worker under mpirun with one failing rank and checks that the job
# stops on its own (not killed by our 90 s guard), exits non-zero, within BNORM_FAULT_LIMIT
# seconds, and says why (BNORM_FAULT_EXPECT, a regular expression over stdout + stderr).
# -D: BNORM_MPIRUN (a ;-list), BNORM_WORKER, BNORM_MODE, BNORM_PROCESSES, BNORM_FAULT_LIMIT, BNORM_FAULT_EXPECT
string(TIMESTAMP start "%s" UTC)
execute_process(COMMAND ${BNORM_MPIRUN} -np ${BNORM_PROCESSES} ${BNORM_WORKER} ${BNORM_MODE}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 90)
string(TIMESTAMP stop "%s" UTC)
math(EXPR elapsed "${stop} - ${start}")
message("mode ${BNORM_MODE}: exit status '${rc}' after ${elapsed} s; output:\n${out}${err}")
if(rc MATCHES "timeout" OR rc MATCHES "^0$")
  message(FATAL_ERROR "the job did not stop with an error on its own (status '${rc}')")
endif()
if(elapsed GREATER ${BNORM_FAULT_LIMIT})
  message(FATAL_ERROR "the job took ${elapsed} s to stop; the limit is ${BNORM_FAULT_LIMIT} s")
endif()
if(NOT "${out}${err}" MATCHES "${BNORM_FAULT_EXPECT}")
  message(FATAL_ERROR "the output does not say why; expected /${BNORM_FAULT_EXPECT}/")
endif()
