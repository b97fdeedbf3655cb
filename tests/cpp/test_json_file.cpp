// io::load_json_file: config.json read as Python's json reads it, or refused by name.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "prge/io/json_file.h"

namespace {

std::string written(const std::string& name, const std::string& text) {
  const auto path = (std::filesystem::temp_directory_path() / name).string();
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

std::string error_of(const std::string& path) {
  try {
    prge::io::load_json_file(path);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(JsonFile, SurrogatePairsAreDecodedAndEveryOtherEscapeKept) {
  using prge::io::decode_surrogate_pairs;
  EXPECT_EQ(decode_surrogate_pairs(R"("a\ud83d\ude00b")"), "\"a\xF0\x9F\x98\x80" "b\"");  // U+1F600
  EXPECT_EQ(decode_surrogate_pairs(R"("\uDBFF\uDFFF")"), "\"\xF4\x8F\xBF\xBF\"");        // U+10FFFF
  for (const std::string kept : {R"("\\ud83d\ude00")",  // an escaped backslash, then text
                                 R"("\ud83d")", R"("\ud83d\u0041")", R"("\ude00\ud83d")", R"("\u00e9\n\"")",
                                 R"("\ud83d\ude0")", "\"\\"}) {
    EXPECT_EQ(decode_surrogate_pairs(kept), kept);
  }
  const auto path = written("prge_json_file_emoji.json", R"({"id2label": {"0": "\ud83d\ude00"}, "n": 2})");
  const YAML::Node json = prge::io::load_json_file(path);
  EXPECT_EQ(json["id2label"]["0"].Scalar(), "\xF0\x9F\x98\x80");
  EXPECT_EQ(json["n"].Scalar(), "2");
}

TEST(JsonFile, AKeyGivenTwiceIsNamedWithItsObject) {
  EXPECT_NE(error_of(written("prge_json_twice.json", R"({"sliding_window": 8, "sliding_window": 16})"))
                .find("key 'sliding_window' appears twice (Python's json"),
            std::string::npos);
  EXPECT_NE(error_of(written("prge_json_twice_nested.json",
                             R"({"text_config": {"rope_parameters": {"factor": 2, "factor": 4}}})"))
                .find("key 'factor' appears twice in text_config.rope_parameters"),
            std::string::npos);
  EXPECT_NE(error_of(written("prge_json_twice_list.json", R"({"l": [{"a": 1}, {"a": 1, "a": 2}]})"))
                .find("key 'a' appears twice in l[1]"),
            std::string::npos);
  EXPECT_EQ(error_of(written("prge_json_once.json", R"({"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]})")), "");
}
