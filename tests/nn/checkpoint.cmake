# checkpoint.cmake: the Python side of the optimizer and checkpoint tests (included by
# tests/CMakeLists.txt). The C++ test binaries write what the scripts check with Debian's torch:
#   nn_optim_torch_parity       nn_optim --write-trajectory: SGD/Adam trajectories and schedules
#                               against torch.optim and torch.optim.lr_scheduler
#   nn_checkpoint_torch_load    nn_checkpoint --write-fixture: a checkpoint loaded into a torch
#                               nn.Sequential with load_state_dict(strict=True)
# Not in sanitizer builds, as the other Python tests: the scripts run the instrumented binaries
# only as helpers, and the sanitizer run covers the same code through the C++ tests.
if(NOT BNORM_SANITIZE)
  set(BNORM_PYTHON /usr/bin/python3 CACHE FILEPATH "Debian's python3, with python3-torch, python3-numpy, python3-onnx")
  add_test(NAME nn_optim_torch_parity
           COMMAND ${BNORM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/nn/optim_parity.py --binary $<TARGET_FILE:nn_optim>)
  add_test(NAME nn_checkpoint_torch_load
           COMMAND ${BNORM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/nn/checkpoint_torch_load.py
                   --binary $<TARGET_FILE:nn_checkpoint>)
  set_tests_properties(nn_optim_torch_parity nn_checkpoint_torch_load PROPERTIES TIMEOUT 300 LABELS python)
endif()
