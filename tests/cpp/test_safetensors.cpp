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

// The header is JSON read as Python's safetensors reads it: not JSON, or a tensor named twice
// (Python would keep the last entry, prge had kept the first), is refused naming the file.
TEST(Safetensors, AHeaderThatIsNotJsonOrNamesATensorTwiceIsRefused) {
  const auto path = (fs::temp_directory_path() / "prge_test_header.safetensors").string();
  const auto error_for = [&](const std::string& header) {
    std::ofstream file(path, std::ios::binary);
    const uint64_t size = header.size();
    file.write(reinterpret_cast<const char*>(&size), 8);
    file << header << std::string(4, '\0');
    file.close();
    try {
      prge::io::load_safetensors(path);
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const std::string w = R"({"dtype": "F32", "shape": [1], "data_offsets": [0, 4]})";
  EXPECT_EQ(error_for(R"({"w": )" + w + "}  "), "");  // padded with spaces, as the format allows
  EXPECT_NE(error_for(R"({"w": )" + w + R"(, "w": {"dtype": "I32", "shape": [1], "data_offsets": [0, 4]}})")
                .find("prge_test_header.safetensors: key 'w' appears twice"),
            std::string::npos);
  EXPECT_NE(error_for(R"({"w": )" + w + ",}").find("safetensors header is not JSON: line 1, column 62: '}' where"),
            std::string::npos);
  fs::remove(path);
}
