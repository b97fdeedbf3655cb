// Checkpoints must round-trip bit-exactly, and a damaged file must be refused.
#include "prge/io/safetensors.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

TEST(Safetensors, RoundTripAndTruncation) {
  const auto path = (fs::temp_directory_path() / "prge_test_roundtrip.safetensors").string();
  prge::io::TensorMap tensors{{"a", torch::randn({3, 5})},
                              {"b", torch::randn({7}).to(torch::kBFloat16)},
                              {"c", torch::arange(4, torch::kInt64)}};
  prge::io::save_safetensors(path, tensors, {{"step", "12"}});
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  auto loaded = prge::io::load_safetensors(path);
  ASSERT_EQ(loaded.size(), 3u);
  for (const auto& [name, t] : tensors) EXPECT_TRUE(torch::equal(loaded.at(name), t)) << name;

  fs::resize_file(path, fs::file_size(path) - 4);
  EXPECT_THROW(prge::io::load_safetensors(path), std::runtime_error);
  EXPECT_THROW(prge::io::load_safetensors(path + ".missing"), std::runtime_error);
  fs::remove(path);
}
