#include "prge/token_batch.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <stdexcept>

namespace prge {

void TokenBatch::validate() const {
  if (!input_ids.defined() || !targets.defined()) {
    throw std::invalid_argument("token batch needs both input_ids and targets");
  }
  if (input_ids.dim() != 2 || input_ids.scalar_type() != torch::kInt64) {
    throw std::invalid_argument("input_ids must be a 2-D int64 tensor [batch, seq]");
  }
  if (targets.sizes() != input_ids.sizes() || targets.scalar_type() != torch::kInt64) {
    throw std::invalid_argument(fmt::format("targets must be int64 with the shape of input_ids ({}), got {}",
                                            fmt::join(input_ids.sizes(), "x"),
                                            fmt::join(targets.sizes(), "x")));
  }
  if (input_ids.size(0) == 0 || input_ids.size(1) == 0) {
    throw std::invalid_argument("token batch is empty");
  }
  auto answers = (targets != kIgnoreIndex).sum(1);
  if ((answers == 0).any().item<bool>()) {
    throw std::invalid_argument("every sequence needs at least one answer token (targets != -100)");
  }
}

TokenBatch TokenBatch::repeated(int64_t copies, const torch::Device& device) const {
  auto ids = input_ids.to(device);
  auto tgt = targets.to(device);
  if (copies == 1) return {ids, tgt};
  return {ids.repeat({copies, 1}), tgt.repeat({copies, 1})};
}

}  // namespace prge
