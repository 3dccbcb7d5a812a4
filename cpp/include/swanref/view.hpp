// swanref/view.hpp: strided views (pointer, shape, strides in elements) and
// batch iteration. A StridedView of ndim >= 2 is a stack of matrices
// (*batch, m, n); matrix(b) returns the b-th slice (row-major batch order).
// Strides may be zero or negative (views of NumPy arrays arrive as they are); the data
// pointer must be aligned for T (misaligned reads are undefined behaviour: bindings copy
// such buffers first).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "swanref/status.hpp"

namespace swanref {

using index_t = std::ptrdiff_t;

// Overflow-safe size arithmetic: every element count, byte count and offset bound that comes
// from a caller (shapes from the C API, NumPy shapes, iteration counts) goes through these.
// out = a * b for a, b >= 0; Status::size_overflow (out untouched) if it exceeds index_t.
inline Status checked_mul(index_t a, index_t b, index_t& out) noexcept {
  if (a < 0 || b < 0) return Status::invalid_argument;
  if (a != 0 && b > std::numeric_limits<index_t>::max() / a) return Status::size_overflow;
  out = a * b;
  return Status::ok;
}

// Number of elements of an array of the given extents, with a message on failure: the
// product of the non-zero extents must fit index_t (so every partial product of the
// extents does, in any order), and so must that many elements of elem_size bytes.
inline index_t checked_element_count(const index_t* ext, std::size_t ndim, std::size_t elem_size = 1) {
  index_t nonzero = 1, total = 1;
  for (std::size_t k = 0; k < ndim; ++k) {
    require(ext[k] >= 0, "negative extent in shape");
    if (ext[k] != 0 && checked_mul(nonzero, ext[k], nonzero) != Status::ok)
      fail(Status::size_overflow, "array size overflows: the product of the extents exceeds " +
                                      std::to_string(std::numeric_limits<index_t>::max()));
    total = ext[k] == 0 ? 0 : total;
  }
  index_t bytes = 0;
  if (checked_mul(nonzero, static_cast<index_t>(elem_size), bytes) != Status::ok)
    fail(Status::size_overflow, "array size overflows: " + std::to_string(nonzero) + " elements of " +
                                    std::to_string(elem_size) + " bytes exceed the address space");
  return total == 0 ? 0 : nonzero;
}

template <class T>
struct MatrixView {
  T* data = nullptr;
  index_t rows = 0, cols = 0;
  index_t rs = 0, cs = 0;  // element strides between rows / between columns

  T& operator()(index_t i, index_t j) const { return data[i * rs + j * cs]; }
  T* row(index_t i) const { return data + i * rs; }
  bool rows_contiguous() const { return cs == 1 || cols <= 1; }
  // True when the matrix is a dense row-major block with leading dimension == cols.
  bool c_contiguous() const { return rows_contiguous() && (rs == cols || rows <= 1); }
};

template <class T>
class StridedView {
 public:
  StridedView() = default;
  StridedView(T* data, std::vector<index_t> shape, std::vector<index_t> strides)
      : data_(data), shape_(std::move(shape)), strides_(std::move(strides)) {
    require(shape_.size() == strides_.size(), "shape and strides must have the same length");
    require(shape_.size() >= 2, "expected an array with ndim >= 2 (shape (*batch, m, n)), got ndim " +
                                    std::to_string(shape_.size()));
    checked_element_count(shape_.data(), shape_.size(), sizeof(T));
    require(reinterpret_cast<std::uintptr_t>(data_) % alignof(T) == 0,
            "data pointer is not aligned to the element size (" + std::to_string(alignof(T)) + " bytes)");
  }

  // A dense C-order view of the given shape.
  static StridedView contiguous(T* data, const std::vector<index_t>& shape) {
    checked_element_count(shape.data(), shape.size(), sizeof(T));  // the strides below cannot overflow
    std::vector<index_t> st(shape.size());
    index_t s = 1;
    for (std::size_t k = shape.size(); k-- > 0;) {
      st[k] = s;
      s *= shape[k];
    }
    return StridedView(data, shape, st);
  }

  T* data() const { return data_; }
  std::size_t ndim() const { return shape_.size(); }
  const std::vector<index_t>& shape() const { return shape_; }
  const std::vector<index_t>& strides() const { return strides_; }
  index_t rows() const { return shape_[ndim() - 2]; }
  index_t cols() const { return shape_[ndim() - 1]; }
  index_t batch_count() const {
    index_t b = 1;
    for (std::size_t k = 0; k + 2 < ndim(); ++k) b *= shape_[k];
    return b;
  }
  index_t size() const { return batch_count() * rows() * cols(); }

  MatrixView<T> matrix(index_t b) const {
    index_t off = 0;
    for (std::size_t k = ndim() - 2; k-- > 0;) {
      const index_t ext = shape_[k];
      off += (b % ext) * strides_[k];
      b /= ext;
    }
    return MatrixView<T>{data_ + off, rows(), cols(), strides_[ndim() - 2], strides_[ndim() - 1]};
  }

 private:
  T* data_ = nullptr;
  std::vector<index_t> shape_, strides_;
};

// The b-th m x n slice of a dense C-order output buffer.
template <class T>
inline MatrixView<T> dense_matrix(T* out, index_t b, index_t m, index_t n) {
  return MatrixView<T>{out + b * m * n, m, n, n, 1};
}

}  // namespace swanref
