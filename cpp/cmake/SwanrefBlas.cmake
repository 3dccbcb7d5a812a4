# BLAS/LAPACK for the standalone (non-Python) build: the C API library, the C++
# tests and the embedding example. The Python extension links no BLAS (it takes
# SciPy's through capsules at import), so none of this runs under scikit-build.
#
#   SWANREF_BLAS = auto (default) | scipy-openblas32 | system | none
#     scipy-openblas32: the PyPI wheel `scipy-openblas32` (OpenBLAS with LAPACK,
#       LP64, symbols prefixed "scipy_", ships OpenBLASConfig.cmake). Found through
#       the Python interpreter (Python3_EXECUTABLE or the first python3 on PATH)
#       or SWANREF_OPENBLAS_DIR (the wheel's lib/cmake/openblas directory).
#     system: CMake's FindLAPACK (pulls in BLAS), unprefixed Fortran symbols.
#     auto: scipy-openblas32 if found, else system, else none.
#   SWANREF_C_API = AUTO (default) | ON | OFF: the C API library; ON without a BLAS is a
#     configure error with the fix, AUTO without one a warning with the fix.
# Results: SWANREF_HAVE_BLAS, SWANREF_BUILD_C_API, SWANREF_BLAS_PREFIX, SWANREF_BLAS_RPATH,
# SWANREF_BLAS_LIBRARY (the scipy-openblas32 library file) and the INTERFACE target swanref_blas.
set(SWANREF_BLAS "auto" CACHE STRING "BLAS/LAPACK for the standalone build: auto, scipy-openblas32, system, none")
set_property(CACHE SWANREF_BLAS PROPERTY STRINGS auto scipy-openblas32 system none)
set(SWANREF_OPENBLAS_DIR "" CACHE PATH "Directory with OpenBLASConfig.cmake of the scipy-openblas32 wheel")

set(SWANREF_HAVE_BLAS OFF)
set(SWANREF_BLAS_PREFIX "")
set(SWANREF_BLAS_RPATH "")
set(SWANREF_BLAS_LIBRARY "")
set(_swanref_ob_tried "")

# The interpreters that may hold the wheel, in order: the one named with -DPython3_EXECUTABLE,
# the active virtual environment's / conda environment's, then python3 and python on PATH
# (a PATH python3 outside the venv is the usual reason for "not found").
function(_swanref_find_scipy_openblas out_dir out_tried)
  set(${out_dir} "" PARENT_SCOPE)
  set(_tried "")
  if(SWANREF_OPENBLAS_DIR)
    if(EXISTS "${SWANREF_OPENBLAS_DIR}/OpenBLASConfig.cmake")
      set(${out_dir} "${SWANREF_OPENBLAS_DIR}" PARENT_SCOPE)
      return()
    endif()
    list(APPEND _tried "SWANREF_OPENBLAS_DIR=${SWANREF_OPENBLAS_DIR}: no OpenBLASConfig.cmake there")
  endif()
  set(_candidates "")
  if(Python3_EXECUTABLE)
    list(APPEND _candidates "${Python3_EXECUTABLE}")
  endif()
  foreach(_env VIRTUAL_ENV CONDA_PREFIX)
    if(DEFINED ENV{${_env}} AND EXISTS "$ENV{${_env}}/bin/python")
      list(APPEND _candidates "$ENV{${_env}}/bin/python")
    endif()
  endforeach()
  foreach(_name python3 python)
    unset(_swanref_py CACHE)
    find_program(_swanref_py NAMES ${_name})
    if(_swanref_py)
      list(APPEND _candidates "${_swanref_py}")
    endif()
    unset(_swanref_py CACHE)
  endforeach()
  list(REMOVE_DUPLICATES _candidates)
  foreach(_py IN LISTS _candidates)
    execute_process(
      COMMAND "${_py}" -c "import scipy_openblas32 as s, os; print(os.path.join(s.get_lib_dir(), 'cmake', 'openblas'))"
      OUTPUT_VARIABLE _dir ERROR_VARIABLE _err OUTPUT_STRIP_TRAILING_WHITESPACE
      ERROR_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc)
    if(_rc EQUAL 0 AND EXISTS "${_dir}/OpenBLASConfig.cmake")
      set(${out_dir} "${_dir}" PARENT_SCOPE)
      set(SWANREF_OPENBLAS_PYTHON "${_py}" PARENT_SCOPE)
      return()
    endif()
    string(REGEX REPLACE ".*\n" "" _last "${_err}")
    list(APPEND _tried "${_py}: ${_last}")
  endforeach()
  if(NOT _candidates)
    list(APPEND _tried "no Python interpreter found (Python3_EXECUTABLE unset, no python3 on PATH)")
  endif()
  set(${out_tried} "${_tried}" PARENT_SCOPE)
endfunction()

# The fix, for every message that reports a missing BLAS.
string(CONCAT _swanref_blas_fix
  "  * pip install scipy-openblas32 into the Python you use, and point CMake at that Python:\n"
  "      cmake ... -DPython3_EXECUTABLE=$(python -c 'import sys; print(sys.executable)')\n"
  "  * or give the wheel's CMake directory directly:\n"
  "      -DSWANREF_OPENBLAS_DIR=$(python -c \"import scipy_openblas32 as s, os; print(os.path.join(s.get_lib_dir(), 'cmake', 'openblas'))\")\n"
  "  * or install a system LAPACK (e.g. apt install liblapack-dev libopenblas-dev) and pass -DSWANREF_BLAS=system\n"
  "  * or build only the header-only core: -DSWANREF_C_API=OFF")

if(SWANREF_BLAS STREQUAL "auto" OR SWANREF_BLAS STREQUAL "scipy-openblas32")
  _swanref_find_scipy_openblas(_swanref_ob_dir _swanref_ob_tried)
  if(_swanref_ob_dir)
    find_package(OpenBLAS CONFIG PATHS "${_swanref_ob_dir}" NO_DEFAULT_PATH)
  endif()
  if(TARGET OpenBLAS::OpenBLAS)
    add_library(swanref_blas INTERFACE)
    target_link_libraries(swanref_blas INTERFACE OpenBLAS::OpenBLAS)
    set(SWANREF_HAVE_BLAS ON)
    set(SWANREF_BLAS_PREFIX "scipy_")
    get_filename_component(SWANREF_BLAS_RPATH "${OpenBLAS_LIBRARIES}" DIRECTORY)
    set(SWANREF_BLAS_LIBRARY "${OpenBLAS_LIBRARIES}")
    message(STATUS "swanref: BLAS/LAPACK from scipy-openblas32 ${OpenBLAS_VERSION} (${OpenBLAS_LIBRARIES})")
  elseif(SWANREF_BLAS STREQUAL "scipy-openblas32")
    string(REPLACE ";" "\n    " _swanref_tried_text "${_swanref_ob_tried}")
    message(FATAL_ERROR "swanref: SWANREF_BLAS=scipy-openblas32 but the wheel was not found.\n"
                        "Tried:\n    ${_swanref_tried_text}\nFix:\n${_swanref_blas_fix}")
  endif()
endif()

if(NOT SWANREF_HAVE_BLAS AND (SWANREF_BLAS STREQUAL "auto" OR SWANREF_BLAS STREQUAL "system"))
  enable_language(C)
  find_package(LAPACK QUIET)
  if(LAPACK_FOUND)
    add_library(swanref_blas INTERFACE)
    target_link_libraries(swanref_blas INTERFACE ${LAPACK_LIBRARIES} ${BLAS_LIBRARIES})
    set(SWANREF_HAVE_BLAS ON)
    message(STATUS "swanref: BLAS/LAPACK from the system (${LAPACK_LIBRARIES})")
  elseif(SWANREF_BLAS STREQUAL "system")
    message(FATAL_ERROR "swanref: SWANREF_BLAS=system but FindLAPACK found nothing.\n"
                        "Fix:\n${_swanref_blas_fix}")
  endif()
endif()

# SWANREF_C_API: ON asks for the C API library (libswanref): no BLAS is a configure error;
# AUTO (default) builds it when a BLAS is found and warns loudly otherwise; OFF never builds it.
set(SWANREF_C_API "AUTO" CACHE STRING "Build the C API library libswanref (needs BLAS/LAPACK): AUTO, ON, OFF")
set_property(CACHE SWANREF_C_API PROPERTY STRINGS AUTO ON OFF)
if(NOT SWANREF_HAVE_BLAS)
  string(REPLACE ";" "\n    " _swanref_tried_text "${_swanref_ob_tried}")
  string(CONCAT _swanref_no_blas
    "swanref: no BLAS/LAPACK found (SWANREF_BLAS=${SWANREF_BLAS}), so the C API library "
    "libswanref and the swanref::c target are NOT built; only the header-only core is.\n"
    "Looked for scipy-openblas32 through:\n    ${_swanref_tried_text}\n"
    "and for a system LAPACK (FindLAPACK): none.\nFix:\n${_swanref_blas_fix}")
  if(SWANREF_C_API STREQUAL "ON")
    message(FATAL_ERROR "${_swanref_no_blas}")
  elseif(SWANREF_C_API STREQUAL "AUTO" AND NOT SWANREF_BLAS STREQUAL "none")
    message(WARNING "${_swanref_no_blas}")
  endif()
endif()
if(SWANREF_C_API STREQUAL "OFF")
  set(SWANREF_BUILD_C_API OFF)
else()
  set(SWANREF_BUILD_C_API ${SWANREF_HAVE_BLAS})
endif()
