# FindTorchPython: LibTorch's Python bindings (libtorch_python.so, from Debian's python3-torch or a
# PyTorch install), which LibTorch's own CMake package does not export. Looks next to LibTorch first
# (TORCH_INSTALL_PREFIX, set by find_package(Torch)).
#   TorchPython_FOUND, TorchPython_LIBRARY, imported target TorchPython::TorchPython
find_library(TorchPython_LIBRARY torch_python HINTS ${TORCH_INSTALL_PREFIX}/lib)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(TorchPython REQUIRED_VARS TorchPython_LIBRARY)
if(TorchPython_FOUND AND NOT TARGET TorchPython::TorchPython)
  add_library(TorchPython::TorchPython SHARED IMPORTED)
  set_target_properties(TorchPython::TorchPython PROPERTIES IMPORTED_LOCATION ${TorchPython_LIBRARY})
endif()
mark_as_advanced(TorchPython_LIBRARY)
