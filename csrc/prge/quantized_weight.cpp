#include "prge/quantized_weight.h"

#include <fmt/format.h>

#include <stdexcept>

namespace prge {

namespace {
// q [rows, cols] as uint8 codes (4 bits: the two nibbles of each byte, low first) or int8.
torch::Tensor codes(const QuantizedWeight& w) {
  if (w.bits == 8) return w.qweight;
  auto low = at::bitwise_and(w.qweight, 15);
  auto high = at::bitwise_right_shift(w.qweight, 4);
  return torch::stack({low, high}, -1).view({w.rows, w.cols});
}
}  // namespace

torch::Tensor QuantizedWeight::dequantize(torch::ScalarType dtype) const {
  if (!defined()) throw std::logic_error("dequantize: not a quantized weight");
  const int64_t groups = cols / group_size;
  auto q = codes(*this).view({rows, groups, group_size}).to(torch::kFloat32);
  auto w = offsets.defined() ? at::addcmul(offsets.unsqueeze(-1), q, scales.unsqueeze(-1))
                             : q * scales.unsqueeze(-1);
  return w.view({rows, cols}).to(dtype);
}

int64_t QuantizedWeight::bytes() const {
  int64_t n = qweight.numel() * qweight.element_size() + scales.numel() * scales.element_size();
  if (offsets.defined()) n += offsets.numel() * offsets.element_size();
  return n;
}

QuantizedWeight QuantizedWeight::to(const torch::Device& device) const {
  auto out = *this;
  out.qweight = qweight.to(device);
  out.scales = scales.to(device);
  if (offsets.defined()) out.offsets = offsets.to(device);
  return out;
}

QuantizedWeight QuantizedWeight::from_tensors(const std::string& name, const torch::Tensor& qweight,
                                              const torch::Tensor& scales, const torch::Tensor& offsets,
                                              const torch::Tensor& format, int64_t rows, int64_t cols) {
  if (format.numel() != 2) {
    throw std::runtime_error(fmt::format("quantized weight '{}': format must hold [bits, group_size]", name));
  }
  const auto f = format.to(torch::kCPU, torch::kInt64).contiguous();
  QuantizedWeight q;
  q.bits = f.data_ptr<int64_t>()[0];
  q.group_size = f.data_ptr<int64_t>()[1];
  q.rows = rows;
  q.cols = cols;
  q.qweight = qweight;
  q.scales = scales;
  q.offsets = offsets;
  q.validate(name);
  return q;
}

void QuantizedWeight::validate(const std::string& name) const {
  auto fail = [&](const std::string& what) {
    throw std::runtime_error(fmt::format("quantized weight '{}': {}", name, what));
  };
  if (bits != 4 && bits != 8) fail(fmt::format("{} bits (prge stores 4 or 8)", bits));
  if (group_size <= 0 || cols % group_size != 0 || (bits == 4 && cols % 2 != 0)) {
    fail(fmt::format("group size {} does not divide {} columns", group_size, cols));
  }
  const auto want_q = bits == 8 ? std::vector<int64_t>{rows, cols} : std::vector<int64_t>{rows, cols / 2};
  if (qweight.sizes() != at::IntArrayRef(want_q) ||
      qweight.scalar_type() != (bits == 8 ? torch::kInt8 : torch::kUInt8)) {
    fail("codes of the wrong shape or type");
  }
  const std::vector<int64_t> want_s{rows, cols / group_size};
  if (scales.sizes() != at::IntArrayRef(want_s) || scales.scalar_type() != torch::kFloat32 ||
      (offsets.defined() && (offsets.sizes() != at::IntArrayRef(want_s) || offsets.scalar_type() != torch::kFloat32))) {
    fail("scales / offsets of the wrong shape or type");
  }
  if (bits == 4 && !offsets.defined()) {  // the nibbles are unsigned (0..15): without offsets every weight is >= 0
    fail("4-bit codes need their .offsets (the codes are unsigned), and there are none");
  }
  if (!torch::isfinite(scales).all().item<bool>() || (offsets.defined() && !torch::isfinite(offsets).all().item<bool>())) {
    fail("non-finite scales or offsets");
  }
}

QuantizedWeight quantize(const torch::Tensor& weight, int64_t bits, int64_t group_size) {
  if (weight.dim() != 2) throw std::invalid_argument("quantize: a 2-D weight is needed");
  const int64_t rows = weight.size(0), cols = weight.size(1);
  if (group_size <= 0) group_size = cols;
  if (cols % group_size != 0) {
    throw std::invalid_argument(fmt::format("quantize: group size {} does not divide {} columns", group_size, cols));
  }
  QuantizedWeight q;
  q.bits = bits;
  q.rows = rows;
  q.cols = cols;
  q.group_size = group_size;
  auto w = weight.to(torch::kFloat32).view({rows, cols / group_size, group_size});
  if (bits == 8) {  // symmetric: q in [-127, 127]
    auto scale = w.abs().amax(-1).clamp_min(1e-12) / 127.0;
    q.qweight = torch::round(w / scale.unsqueeze(-1)).clamp(-127, 127).to(torch::kInt8).view({rows, cols});
    q.scales = scale.contiguous();
  } else if (bits == 4) {  // asymmetric: w = q * scale + min, q in [0, 15]
    if (cols % 2 != 0) throw std::invalid_argument("quantize: int4 needs an even number of columns");
    auto low = w.amin(-1), high = w.amax(-1);
    auto scale = ((high - low) / 15.0).clamp_min(1e-12);
    auto code = torch::round((w - low.unsqueeze(-1)) / scale.unsqueeze(-1)).clamp(0, 15).to(torch::kUInt8)
                    .view({rows, cols / 2, 2});
    q.qweight = at::bitwise_or(code.select(-1, 0), at::bitwise_left_shift(code.select(-1, 1), 4)).contiguous();
    q.scales = scale.contiguous();
    q.offsets = low.contiguous();
  } else {
    throw std::invalid_argument(fmt::format("quantize: {} bits (allowed: 4, 8)", bits));
  }
  return q;
}

std::vector<std::string> quantized_tensor_names(const std::string& name) {
  return {name + ".qweight", name + ".scales", name + ".offsets", name + ".format"};
}

}  // namespace prge
