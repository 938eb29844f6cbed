# The layers' PyTorch parity: network_parity_dump (C++) runs one training step of each experiment
# network and network_parity.py redoes it in torch and compares. Like the other Python tests it stays
# out of sanitizer builds, whose runs cover the same code through the C++ tests.
add_executable(nn_network_parity_dump ${CMAKE_CURRENT_LIST_DIR}/network_parity_dump.cpp)
target_link_libraries(nn_network_parity_dump PRIVATE bnorm_nn bnorm_warnings nlohmann_json::nlohmann_json)
if(NOT BNORM_SANITIZE)
  set(BNORM_PYTHON /usr/bin/python3 CACHE FILEPATH "Debian's python3, with python3-torch, python3-numpy, python3-onnx")
  add_test(NAME nn_layers_torch_parity
           COMMAND ${BNORM_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/network_parity.py
                   --dump $<TARGET_FILE:nn_network_parity_dump>)
  set_tests_properties(nn_layers_torch_parity PROPERTIES TIMEOUT 300 LABELS python)
endif()
