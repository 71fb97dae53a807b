# xdq_add_plugin(NAME KIND SOURCES...)
# Builds one plugin library with the flags every plugin shares: hidden visibility (only the entry symbol
# is exported), the host's C++ standard and LibTorch ABI. The library lands in XDQ_PLUGIN_OUTPUT_DIR
# (build/plugins/ in-tree) as xdq_<kind>_<name>.so, where the host's plugin search finds it; with
# XDQ_PLUGIN_INSTALL_DIR set (xdq's own plugins) it is also installed there.
function(xdq_add_plugin NAME KIND)
  set(sources ${ARGN})
  set(target xdq_${KIND}_${NAME})
  add_library(${target} MODULE ${sources})
  if(TARGET xdq::core)
    target_link_libraries(${target} PRIVATE xdq::core)
  else()
    target_link_libraries(${target} PRIVATE xdq_core)
  endif()
  set_target_properties(${target} PROPERTIES
    PREFIX ""
    CXX_STANDARD 17
    CXX_STANDARD_REQUIRED ON
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  if(XDQ_PLUGIN_OUTPUT_DIR)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${XDQ_PLUGIN_OUTPUT_DIR})
  endif()
  if(XDQ_PLUGIN_INSTALL_DIR)
    set_target_properties(${target} PROPERTIES INSTALL_RPATH "$ORIGIN/../..")  # lib/xdq/plugins -> lib
    install(TARGETS ${target} LIBRARY DESTINATION ${XDQ_PLUGIN_INSTALL_DIR})
  endif()
endfunction()
