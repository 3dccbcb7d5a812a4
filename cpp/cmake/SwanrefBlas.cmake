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
# Results: SWANREF_HAVE_BLAS, SWANREF_BLAS_PREFIX, SWANREF_BLAS_RPATH and the
# INTERFACE target swanref_blas.
set(SWANREF_BLAS "auto" CACHE STRING "BLAS/LAPACK for the standalone build: auto, scipy-openblas32, system, none")
set_property(CACHE SWANREF_BLAS PROPERTY STRINGS auto scipy-openblas32 system none)
set(SWANREF_OPENBLAS_DIR "" CACHE PATH "Directory with OpenBLASConfig.cmake of the scipy-openblas32 wheel")

set(SWANREF_HAVE_BLAS OFF)
set(SWANREF_BLAS_PREFIX "")
set(SWANREF_BLAS_RPATH "")

function(_swanref_find_scipy_openblas out_dir)
  set(${out_dir} "" PARENT_SCOPE)
  if(SWANREF_OPENBLAS_DIR)
    set(${out_dir} "${SWANREF_OPENBLAS_DIR}" PARENT_SCOPE)
    return()
  endif()
  if(Python3_EXECUTABLE)
    set(_py "${Python3_EXECUTABLE}")
  else()
    find_program(SWANREF_PYTHON_EXECUTABLE NAMES python3 python)
    set(_py "${SWANREF_PYTHON_EXECUTABLE}")
  endif()
  if(NOT _py)
    return()
  endif()
  execute_process(
    COMMAND "${_py}" -c "import scipy_openblas32 as s, os; print(os.path.join(s.get_lib_dir(), 'cmake', 'openblas'))"
    OUTPUT_VARIABLE _dir OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _rc)
  if(_rc EQUAL 0 AND EXISTS "${_dir}/OpenBLASConfig.cmake")
    set(${out_dir} "${_dir}" PARENT_SCOPE)
  endif()
endfunction()

if(SWANREF_BLAS STREQUAL "auto" OR SWANREF_BLAS STREQUAL "scipy-openblas32")
  _swanref_find_scipy_openblas(_swanref_ob_dir)
  if(_swanref_ob_dir)
    find_package(OpenBLAS CONFIG PATHS "${_swanref_ob_dir}" NO_DEFAULT_PATH)
  endif()
  if(TARGET OpenBLAS::OpenBLAS)
    add_library(swanref_blas INTERFACE)
    target_link_libraries(swanref_blas INTERFACE OpenBLAS::OpenBLAS)
    set(SWANREF_HAVE_BLAS ON)
    set(SWANREF_BLAS_PREFIX "scipy_")
    get_filename_component(SWANREF_BLAS_RPATH "${OpenBLAS_LIBRARIES}" DIRECTORY)
    message(STATUS "swanref: BLAS/LAPACK from scipy-openblas32 ${OpenBLAS_VERSION} (${OpenBLAS_LIBRARIES})")
  elseif(SWANREF_BLAS STREQUAL "scipy-openblas32")
    message(FATAL_ERROR "swanref: SWANREF_BLAS=scipy-openblas32 but the wheel was not found "
                        "(pip install scipy-openblas32, or set SWANREF_OPENBLAS_DIR)")
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
    message(FATAL_ERROR "swanref: SWANREF_BLAS=system but FindLAPACK found nothing")
  endif()
endif()

if(NOT SWANREF_HAVE_BLAS)
  message(STATUS "swanref: no BLAS/LAPACK; building the header-only core and BLAS-free tests only")
endif()
