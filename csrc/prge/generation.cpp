#include "prge/generation.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <stdexcept>

namespace prge {

void GenerationOptions::validate() const {
  if (max_new_tokens < 0) throw std::invalid_argument("max_new_tokens must be >= 0");
  if (!(temperature >= 0.0)) throw std::invalid_argument("temperature must be >= 0");
  if (top_k < 0) throw std::invalid_argument("top_k must be >= 0");
  if (!(top_p > 0.0 && top_p <= 1.0)) throw std::invalid_argument("top_p must be in (0, 1]");
  if (!(repetition_penalty > 0.0) || !std::isfinite(repetition_penalty)) {
    throw std::invalid_argument("repetition_penalty must be a number > 0");
  }
  if (no_repeat_ngram_size < 0) throw std::invalid_argument("no_repeat_ngram_size must be >= 0");
}

namespace {

// repetition_penalty and no_repeat_ngram_size on the next-token logits [N, V] (float32) of
// sequences `tokens` (each row's prompt and new tokens), as transformers' processors do.
torch::Tensor process(torch::Tensor logits, const std::vector<std::vector<int64_t>>& tokens,
                      const GenerationOptions& o) {
  if (o.repetition_penalty == 1.0 && o.no_repeat_ngram_size == 0) return logits;
  auto host = logits.to(torch::kCPU).contiguous();
  auto* rows = host.data_ptr<float>();
  const auto vocab = host.size(1);
  const auto n = o.no_repeat_ngram_size;
  for (size_t row = 0; row < tokens.size(); ++row) {
    float* score = rows + static_cast<int64_t>(row) * vocab;
    const auto& seq = tokens[row];
    if (o.repetition_penalty != 1.0) {
      std::vector<int64_t> seen(seq);
      std::sort(seen.begin(), seen.end());
      seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
      const auto penalty = static_cast<float>(o.repetition_penalty);
      for (auto id : seen) score[id] = score[id] < 0 ? score[id] * penalty : score[id] / penalty;
    }
    const auto length = static_cast<int64_t>(seq.size());
    if (n > 0 && length + 1 >= n) {  // every n-gram of seq whose first n - 1 tokens end seq bans its last
      for (int64_t start = 0; start + n <= length; ++start) {
        if (std::equal(seq.begin() + start, seq.begin() + start + n - 1, seq.end() - (n - 1))) {
          score[seq[static_cast<size_t>(start + n - 1)]] = -std::numeric_limits<float>::infinity();
        }
      }
    }
  }
  return host.to(logits.device());
}

// Next token of every row from its logits [N, V] (float32).
torch::Tensor choose(torch::Tensor logits, const GenerationOptions& o, at::Generator& generator) {
  if (o.temperature == 0.0) return logits.argmax(-1);
  logits = logits / o.temperature;
  if (o.top_k > 0 && o.top_k < logits.size(-1)) {
    auto kth = std::get<0>(logits.topk(o.top_k, -1)).select(-1, o.top_k - 1).unsqueeze(-1);
    logits = logits.masked_fill(logits < kth, -std::numeric_limits<float>::infinity());
  }
  if (o.top_p < 1.0) {  // keep the smallest set of most likely tokens whose mass reaches top_p
    auto [sorted, order] = logits.sort(-1, /*descending=*/true);
    auto before = sorted.softmax(-1).cumsum(-1) - sorted.softmax(-1);  // mass strictly above each
    sorted = sorted.masked_fill(before >= o.top_p, -std::numeric_limits<float>::infinity());
    logits = torch::full_like(logits, -std::numeric_limits<float>::infinity()).scatter(-1, order, sorted);
  }
  auto probs = logits.softmax(-1).to(torch::kCPU);
  return at::multinomial(probs, 1, false, generator).squeeze(-1).to(logits.device());
}

}  // namespace

std::vector<std::vector<int64_t>> generate(const CausalLM& model,
                                           const std::vector<std::vector<int64_t>>& prompts,
                                           const GenerationOptions& options) {
  options.validate();
  c10::InferenceMode guard;
  const auto n = static_cast<int64_t>(prompts.size());
  std::vector<std::vector<int64_t>> out(prompts.size());
  if (n == 0 || options.max_new_tokens == 0) return out;
  int64_t width = 0;
  for (const auto& p : prompts) {
    if (p.empty()) throw std::invalid_argument("generate: an empty prompt");
    for (auto id : p) {
      if (id < 0 || id >= model.spec().vocab_size) {
        throw std::invalid_argument(fmt::format("generate: token id {} outside the vocabulary of {}", id,
                                                model.spec().vocab_size));
      }
    }
    width = std::max<int64_t>(width, static_cast<int64_t>(p.size()));
  }
  // Left padding: every prompt ends at column width - 1, so one new column serves all rows.
  auto ids = torch::full({n, width}, options.pad_id, torch::kInt64);
  auto mask = torch::zeros({n, width}, torch::kBool);
  auto positions = torch::zeros({n, width}, torch::kInt64);
  for (int64_t i = 0; i < n; ++i) {
    const auto& p = prompts[static_cast<size_t>(i)];
    const int64_t pad = width - static_cast<int64_t>(p.size());
    ids[i].narrow(0, pad, static_cast<int64_t>(p.size())).copy_(torch::tensor(p, torch::kInt64));
    mask[i].narrow(0, pad, static_cast<int64_t>(p.size())).fill_(true);
    positions[i].narrow(0, pad, static_cast<int64_t>(p.size())).copy_(torch::arange(static_cast<int64_t>(p.size())));
  }
  const auto device = model.device();
  mask = mask.to(device);
  auto next_position = positions.select(1, width - 1).unsqueeze(1) + 1;  // [N, 1]
  KvCache cache;
  auto hidden = model.forward_cached(ids.to(device), positions.to(device), mask, cache);
  auto logits = model.project_to_vocab(hidden.select(1, width - 1));  // [N, V] float32
  at::Generator generator = at::globalContext().defaultGenerator(torch::kCPU).clone();
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_current_seed(options.seed);
  }
  const int64_t recompute_at = model.spec().recompute_cache_at_length;
  auto sequence = ids;  // [N, columns so far], with its positions: what a recomputed cache is made of
  auto sequence_positions = positions;
  std::vector<bool> done(prompts.size(), false);
  std::vector<std::vector<int64_t>> tokens(prompts);  // each sequence so far, for the processors
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    const auto chosen = choose(process(logits, tokens, options), options, generator).to(torch::kCPU);
    const auto* token = chosen.data_ptr<int64_t>();
    bool all_done = true;
    for (int64_t i = 0; i < n; ++i) {
      const auto row = static_cast<size_t>(i);
      if (done[row]) continue;
      const auto& stop = options.stop_tokens;
      if (std::find(stop.begin(), stop.end(), token[i]) != stop.end()) {
        done[row] = true;
      } else {
        out[row].push_back(token[i]);
        tokens[row].push_back(token[i]);
      }
      all_done = all_done && done[row];
    }
    if (all_done || step + 1 == options.max_new_tokens) break;
    mask = torch::cat({mask, torch::ones({n, 1}, mask.options())}, 1);
    if (recompute_at > 0) {
      sequence = torch::cat({sequence, chosen.unsqueeze(1)}, 1);
      sequence_positions = torch::cat({sequence_positions, next_position}, 1);
    }
    if (recompute_at > 0 && sequence.size(1) == recompute_at) {  // the cache holds the columns before it
      cache = KvCache{};
      hidden = model.forward_cached(sequence.to(device), sequence_positions.to(device), mask, cache);
      logits = model.project_to_vocab(hidden.select(1, sequence.size(1) - 1));
    } else {
      hidden = model.forward_cached(chosen.unsqueeze(1).to(device), next_position.to(device), mask, cache);
      logits = model.project_to_vocab(hidden.select(1, 0));
    }
    next_position = next_position + 1;
  }
  return out;
}

}  // namespace prge
