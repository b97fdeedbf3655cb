// io::load_json_file: config.json read as Python's json reads it, or refused by name.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

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
  using prge::io::json_text_for_yaml;
  EXPECT_EQ(json_text_for_yaml(R"("a\ud83d\ude00b")"), "\"a\xF0\x9F\x98\x80" "b\"");  // U+1F600
  EXPECT_EQ(json_text_for_yaml(R"("\uDBFF\uDFFF")"), "\"\xF4\x8F\xBF\xBF\"");        // U+10FFFF
  for (const std::string kept : {R"("\\ud83d")",  // an escaped backslash, then text
                                 R"("\u00e9\n\"")", R"({"a": [1, -2.5e-3, true, null, NaN, -Infinity]})"}) {
    EXPECT_EQ(json_text_for_yaml(kept), kept);
  }
  const auto path = written("prge_json_file_emoji.json", R"({"id2label": {"0": "\ud83d\ude00"}, "n": 2})");
  const YAML::Node json = prge::io::load_json_file(path);
  EXPECT_EQ(json["id2label"]["0"].Scalar(), "\xF0\x9F\x98\x80");
  EXPECT_EQ(json["n"].Scalar(), "2");
}

TEST(JsonFile, YamlThatIsNotJsonIsRefusedWithItsPlace) {
  // What yaml-cpp reads and Python's json refuses: an alias (a self-referential one crashed a
  // walk of the tree), a tag, a comment, `~`, bare words, numbers JSON does not write, single
  // quotes, a BOM; inside a string a raw control character or a lone surrogate escape.
  const std::vector<std::pair<std::string, std::string>> cases{
      {R"({"a": &x {"b": *x}})", "line 1, column 7: '&' is not JSON"},
      {R"({"a": !!str 1e-5})", "column 7: '!' is not JSON"},
      {"{\"a\": 1 # two\n}", "line 1, column 9: '#' is not JSON"},
      {"{\"a\": 1,\n \"b\": ~}", "line 2, column 7: '~' is not JSON"},
      {R"({"a": silu})", "'silu' is not a JSON value"},
      {R"({"a": True})", "'True' is not a JSON value"},
      {R"({"a": 064})", "'064' is not a JSON value"},
      {R"({"a": .5})", "'.5' is not a JSON value"},
      {R"({"a": +1})", "'+1' is not a JSON value"},
      {R"({"a": 'b'})", "''' is not JSON"},
      {std::string("{\"a\": 1}\0", 9), "byte 0x00 is not JSON"},
      {"{\"a\": \"b\tc\"}", "a control character inside a string"},
      {R"({"a": "\ud83d"})", R"(a lone surrogate escape \ud83d)"},
      {R"({"a": "\ude00\ud83d"})", R"(a lone surrogate escape \ude00)"},
      {"\xEF\xBB\xBF{}", "byte 0xef is not JSON"},
      {R"({"a": "\x41"})", R"('\x' is not a JSON escape)"},
      {R"({"a": "\U0001F600"})", R"('\U' is not a JSON escape)"},
      {"{\"a\": \"b\\\nc\"}", "a backslash before byte 0x0a is not a JSON escape"},
      {"{\"a\": " + std::string(100000, '1') + "a}", "'1111111111111111111111111111111111111111...' is not a JSON"},
  };
  for (const auto& [text, words] : cases) {
    const auto error = error_of(written("prge_json_not_json.json", text));
    EXPECT_NE(error.find("prge_json_not_json.json: not JSON: "), std::string::npos) << text << " -> " << error;
    EXPECT_NE(error.find(words), std::string::npos) << text << " -> " << error;
  }
}

TEST(JsonFile, WhatJsonReadsLoads) {
  // A lone \r is a line end to JSON, none to yaml-cpp; a 30000-digit number (std::regex's
  // recursion overflowed the stack on it) reads as Python reads it, 0.
  const auto path = written("prge_json_cr.json", "{\"a\": 1,\r\"b\": [0." + std::string(30000, '0') + "1]\r}");
  const YAML::Node json = prge::io::load_json_file(path);
  EXPECT_EQ(json["a"].Scalar(), "1");
  EXPECT_EQ(std::strtod(json["b"][0].Scalar().c_str(), nullptr), 0.0);
  EXPECT_NE(error_of(written("prge_json_cr_bad.json", "{\"a\": 1,\r\"b\": ~}")).find("line 2, column 6: '~'"),
            std::string::npos);
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
  EXPECT_NE(error_of(written("prge_json_twice_escaped.json", R"({"a": 1, "\u0061": 2})")).find("key 'a' appears twice"),
            std::string::npos);
  EXPECT_EQ(error_of(written("prge_json_once.json", R"({"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]})")), "");
}
