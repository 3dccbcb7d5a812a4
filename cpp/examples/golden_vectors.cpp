// Golden-vector round trip through the C API of an installed swanref (no Python, no NumPy):
//
//   golden_vectors VECDIR OUTDIR
//
// reads VECDIR/index.tsv (written by `swanref vectors`), runs every case whose operator and
// reading the C API covers (GradNorm over rows, exact and Newton-Schulz whitening, SinkGD),
// and writes OUTDIR/<name>.out.npy; `swanref check-vectors VECDIR --outputs OUTDIR` then
// judges them against the expected values and tolerances.  Prints "ran N, skipped M".
#include <swanref/c_api.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace {

struct Array {
  std::string descr;             // '<f8' or '<f4'
  std::vector<int64_t> shape;
  std::vector<char> bytes;
};

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) out.push_back(item);
  return out;
}

// .npy version 1.0/2.0, little-endian float, C order (what `swanref vectors` writes).
Array read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  char magic[8];
  f.read(magic, 8);
  if (std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error("not a .npy file: " + path);
  uint32_t hlen = 0;
  if (magic[6] == 1) {
    unsigned char b[2];
    f.read(reinterpret_cast<char*>(b), 2);
    hlen = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    f.read(reinterpret_cast<char*>(b), 4);
    hlen = b[0] | (b[1] << 8) | (b[2] << 16) | (uint32_t(b[3]) << 24);
  }
  std::string header(hlen, '\0');
  f.read(&header[0], hlen);
  Array a;
  auto d = header.find("'descr': '");
  a.descr = header.substr(d + 10, 3);
  if (header.find("'fortran_order': False") == std::string::npos)
    throw std::runtime_error("Fortran-order .npy not supported: " + path);
  auto p0 = header.find('(', header.find("'shape'"));
  auto p1 = header.find(')', p0);
  for (const auto& dim : split(header.substr(p0 + 1, p1 - p0 - 1), ','))
    if (dim.find_first_not_of(' ') != std::string::npos) a.shape.push_back(std::stoll(dim));
  int64_t count = 1;
  for (auto s : a.shape) count *= s;
  size_t item = a.descr == "<f8" ? 8 : a.descr == "<f4" ? 4 : 0;
  if (item == 0) throw std::runtime_error("unsupported dtype " + a.descr + " in " + path);
  a.bytes.resize(size_t(count) * item);
  f.read(a.bytes.data(), std::streamsize(a.bytes.size()));
  if (!f) throw std::runtime_error("truncated " + path);
  return a;
}

void write_npy(const std::string& path, const Array& a) {
  std::string shape = "(";
  for (auto s : a.shape) shape += std::to_string(s) + ", ";
  if (a.shape.size() > 1) shape.resize(shape.size() - 2);
  shape += ")";
  std::string header = "{'descr': '" + a.descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  f.write("\x93NUMPY\x01\x00", 8);
  const unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xff),
                                static_cast<unsigned char>(header.size() >> 8)};
  f.write(reinterpret_cast<const char*>(len), 2);
  f.write(header.data(), std::streamsize(header.size()));
  f.write(a.bytes.data(), std::streamsize(a.bytes.size()));
}

std::map<std::string, std::string> parse_reading(const std::string& reading) {
  std::map<std::string, std::string> kv;
  for (const auto& part : split(reading, ';')) {
    auto eq = part.find('=');
    if (eq != std::string::npos) kv[part.substr(0, eq)] = part.substr(eq + 1);
  }
  return kv;
}

// Swap the last two axes (tall -> wide for the C API, which takes m <= n), any batch.
template <class T>
std::vector<T> transpose_last2(const T* x, int64_t batch, int64_t m, int64_t n) {
  std::vector<T> y(size_t(batch * m * n));
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) y[size_t(b * m * n + j * m + i)] = x[b * m * n + i * n + j];
  return y;
}

int scaling_of(std::map<std::string, std::string>& r) {
  return r["scaling"] == "grad_fro" ? SWANREF_SCALING_GRAD_FRO
         : r["scaling"] == "none"   ? SWANREF_SCALING_NONE
                                    : SWANREF_SCALING_GRAM_FRO;
}

// Exact ("svd", default rank tolerance max(m, n) eps) or Newton-Schulz.
template <class T>
int call_whiten(const std::string& method, const T* g, T* o, int64_t batch, int64_t m, int64_t n,
                std::map<std::string, std::string>& r) {
  constexpr bool f64 = std::is_same<T, double>::value;
  const double rtol = SWANREF_DEFAULT_RTOL;  // max(m, n) eps, swanref.whiten's default
  const int64_t steps = method == "svd" ? 0 : std::stoll(r["steps"]);
  const double beta = method == "svd" ? 0.0 : std::stod(r["beta"]);
  if constexpr (f64) {
    if (method == "svd") return swanref_whiten_svd_f64(g, o, batch, m, n, rtol);
    return swanref_whiten_newton_schulz_f64(g, o, batch, m, n, steps, beta, scaling_of(r));
  } else {
    if (method == "svd") return swanref_whiten_svd_f32(g, o, batch, m, n, rtol);
    return swanref_whiten_newton_schulz_f32(g, o, batch, m, n, steps, beta, scaling_of(r));
  }
}

int call_grad_norm(const double* g, double* o, int64_t b, int64_t m, int64_t n, double eps) {
  return swanref_grad_norm_f64(g, o, b, m, n, eps);
}
int call_grad_norm(const float* g, float* o, int64_t b, int64_t m, int64_t n, double eps) {
  return swanref_grad_norm_f32(g, o, b, m, n, eps);
}
int call_sinkgd(const double* g, double* o, int64_t b, int64_t m, int64_t n, int64_t it) {
  return swanref_sinkgd_f64(g, o, b, m, n, it);
}
int call_sinkgd(const float* g, float* o, int64_t b, int64_t m, int64_t n, int64_t it) {
  return swanref_sinkgd_f32(g, o, b, m, n, it);
}

// Runs one case in dtype T; returns false if the C API has no counterpart for its reading.
template <class T>
bool run_case(const std::string& op, std::map<std::string, std::string> r, Array& a, Array& out) {
  const int64_t m = a.shape[a.shape.size() - 2], n = a.shape.back();
  int64_t batch = 1;
  for (size_t i = 0; i + 2 < a.shape.size(); ++i) batch *= a.shape[i];
  const T* g = reinterpret_cast<const T*>(a.bytes.data());
  out = a;
  T* o = reinterpret_cast<T*>(out.bytes.data());
  int status = SWANREF_OK;
  if (op == "grad_norm") {
    if (r["axis"] != "-1") return false;  // the C API standardises rows only
    status = call_grad_norm(g, o, batch, m, n, std::stod(r["eps"]));
  } else if (op == "sinkgd_update") {
    status = call_sinkgd(g, o, batch, m, n, std::stoll(r["iters"]));
  } else if (op == "whiten" && (r["method"] == "svd" || r["method"] == "newton_schulz")) {
    if (m <= n) {
      status = call_whiten<T>(r["method"], g, o, batch, m, n, r);
    } else {  // the C API takes m <= n: whiten(G) = whiten(G^T)^T (spec 3.0)
      auto gt = transpose_last2(g, batch, m, n);
      std::vector<T> ot(gt.size());
      status = call_whiten<T>(r["method"], gt.data(), ot.data(), batch, n, m, r);
      auto back = transpose_last2(ot.data(), batch, n, m);
      std::memcpy(o, back.data(), back.size() * sizeof(T));
    }
  } else {
    return false;
  }
  if (status != SWANREF_OK) throw std::runtime_error(std::string("C API error: ") + swanref_last_error());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: golden_vectors VECDIR OUTDIR\n";
    return 2;
  }
  const std::string dir = argv[1], outdir = argv[2];
  std::ifstream index(dir + "/index.tsv");
  if (!index) {
    std::cerr << "cannot read " << dir << "/index.tsv\n";
    return 2;
  }
  int ran = 0, skipped = 0;
  std::string line;
  try {
    while (std::getline(index, line)) {
      if (line.empty() || line[0] == '#') continue;
      auto f = split(line, '\t');  // name op dtype shape input expected output metric tolerance reading
      if (f.size() < 10) throw std::runtime_error("bad index line: " + line);
      Array a = read_npy(dir + "/" + f[4]), out;
      auto reading = parse_reading(f[9]);
      bool done = a.descr == "<f8" ? run_case<double>(f[1], reading, a, out)
                                   : run_case<float>(f[1], reading, a, out);
      if (!done) {
        ++skipped;
        continue;
      }
      write_npy(outdir + "/" + f[0] + ".out.npy", out);
      ++ran;
    }
  } catch (const std::exception& e) {
    std::cerr << "golden_vectors: " << e.what() << "\n";
    return 1;
  }
  std::printf("ran %d, skipped %d\n", ran, skipped);
  return 0;
}
