# The installed tree: `cmake --install` into a fresh prefix, the out-of-tree example plugin built against
# that prefix's xdq package (not the build tree), the installed CLI listing both the installed plugins and
# the new one, the installed presets used by a dry run, and the installed Python package importing.
file(REMOVE_RECURSE ${PREFIX} ${BINARY})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD} --prefix ${PREFIX} OUTPUT_QUIET RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed")
endif()
foreach(file bin/xdq lib/libxdq_core.so lib/xdq/plugins/xdq_calibrator_mse.so include/xdq/plugin/plugin.h
             include/xdq/plugin/graph_run.h include/xdq/abi_hash.h share/xdq/configs/presets/brecq_paper.yaml
             lib/cmake/xdq/xdqConfig.cmake)
  if(NOT EXISTS ${PREFIX}/${file})
    message(FATAL_ERROR "not installed: ${PREFIX}/${file}")
  endif()
endforeach()
# Plugin authors get the SDK headers (and what they include), not the engine's.
foreach(file include/xdq/exec/executor.h include/xdq/plugin/registry.h include/xdq/experiment/config.h)
  if(EXISTS ${PREFIX}/${file})
    message(FATAL_ERROR "an engine header outside the plugin SDK is installed: ${PREFIX}/${file}")
  endif()
endforeach()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE} -B ${BINARY} -G Ninja -Dxdq_DIR=${PREFIX}/lib/cmake/xdq
                        -DCMAKE_BUILD_TYPE=Release OUTPUT_QUIET RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring the out-of-tree plugin against the installed package failed")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BINARY} OUTPUT_QUIET RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the out-of-tree plugin against the installed package failed")
endif()
# XDQ_CONFIG_DIR and XDQ_PLUGIN_PATH unset: the installed tree must find its own.
set(ENV{XDQ_CONFIG_DIR} "")
set(ENV{XDQ_PLUGIN_PATH} "")
execute_process(COMMAND ${PREFIX}/bin/xdq plugins --json --path ${BINARY}/plugins OUTPUT_VARIABLE listing RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the installed xdq plugins failed")
endif()
foreach(expected "${BINARY}/plugins/xdq_calibrator_oot_halfmax.so" "${PREFIX}/lib/xdq/plugins/xdq_weight_optimizer_brecq.so")
  string(FIND "${listing}" "${expected}" found)
  if(found EQUAL -1)
    message(FATAL_ERROR "${expected} missing from the installed xdq plugins --json:\n${listing}")
  endif()
endforeach()
# A dry run with a preset: the installed xdq reads its own share/xdq/configs (found before the source
# tree's) and its own plugins.
file(WRITE ${BINARY}/exp.yaml "experiment: installed\nmodels: [{name: r, path: ${MODEL}}]\n"
     "calibration: {source: fashion_mnist.train, count: 16}\ntest: {domains: [fashion_mnist.test], count: 16}\n"
     "quantization: {preset: brecq_paper, bits: [w4a4], calibrators: [minmax]}\n")
execute_process(COMMAND ${PREFIX}/bin/xdq run --dry-run ${BINARY}/exp.yaml OUTPUT_VARIABLE plan RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the installed xdq run --dry-run failed: ${err}")
endif()
# The out-of-tree graph pass runs the model through the SDK (GraphRun) inside a real run of the installed
# xdq: 16 calibration images in, 10 logits each.
file(WRITE ${BINARY}/probe.yaml "experiment: probe\nplugins: {paths: [${BINARY}/plugins]}\nmodels: [{name: r, path: ${MODEL}}]\n"
     "calibration: {source: fashion_mnist.train, count: 16}\ntest: {domains: [fashion_mnist.test], count: 16}\n"
     "quantization: {bits: [w8a8], calibrators: [minmax], passes: [oot_logit_probe]}\n")
execute_process(COMMAND ${PREFIX}/bin/xdq run ${BINARY}/probe.yaml --out ${BINARY}/probe --quiet RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the installed xdq could not run the out-of-tree pass: ${err}")
endif()
file(READ ${BINARY}/probe/run.log log)
if(NOT log MATCHES "oot_logit_probe: 16 images -> 10 logits")
  message(FATAL_ERROR "the out-of-tree pass did not run the model through GraphRun:\n${log}")
endif()
if(PYTHON)
  file(GLOB site ${PREFIX}/lib/python3*/dist-packages)
  execute_process(COMMAND ${CMAKE_COMMAND} -E env PYTHONPATH=${site} ${PYTHON} -c
                          "import xdq; names = [p['name'] for p in xdq.plugins()]; assert 'brecq' in names, names; print(xdq.__file__)"
                  OUTPUT_VARIABLE where RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 0 OR NOT where MATCHES "^${PREFIX}")
    message(FATAL_ERROR "the installed Python package does not import from ${PREFIX}: ${where} ${err}")
  endif()
endif()
message(STATUS "installed tree at ${PREFIX}: CLI, plugins, presets, CMake package and Python package work")
