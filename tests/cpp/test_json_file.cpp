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
                                 R"("\u00e9\n\"")", R"([1, -2.5e-3, true, null, NaN, -Infinity, {}, []])"}) {
    EXPECT_EQ(json_text_for_yaml(kept), kept);
  }
  // Keys are written as YAML's explicit keys; values, strings among them, as they are.
  EXPECT_EQ(json_text_for_yaml(R"({"a": {"b": "c"}, "d": [{"e": 1}]})"),
            R"({? "a": {? "b": "c"}, ? "d": [{? "e": 1}]})");
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
      {R"({"a": 'b'})", "a single quote is not JSON (YAML's"},
      {R"({"a": (1)})", "'(' is not JSON"},
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

TEST(JsonFile, WhatIsNotJsonsStructureIsRefusedWithItsPlace) {
  // yaml-cpp reads each of these (a trailing comma, a member without a value, a number as a key,
  // a second value after the first, ...); Python's json, and so transformers, refuses them.
  const std::vector<std::pair<std::string, std::string>> cases{
      {R"({"a": 1,})", "line 1, column 9: '}' where JSON expects a key (a string)"},
      {R"([1, 2,])", "column 7: ']' where JSON expects a value"},
      {R"([1,,2])", "column 4: ',' where JSON expects a value"},
      {R"({"a"})", "column 5: '}' where JSON expects ':'"},
      {R"({"a": })", "column 7: '}' where JSON expects a value"},
      {R"({1: 2})", "column 2: '1' where JSON expects a key (a string) or '}'"},
      {R"({"a": 1 "b": 2})", "column 9: a string where JSON expects ',' or '}'"},
      {R"({"a": [1 2]})", "column 10: '2' where JSON expects ',' or ']'"},
      {R"({"a": 1]})", "column 8: ']' where JSON expects ',' or '}'"},
      {"{\"a\": 1}\n{\"b\": 2}", "line 2, column 1: '{' where JSON expects the end of the file"},
      {R"({"a": 1}})", "column 9: '}' where JSON expects the end of the file"},
      {R"("a": 1)", "column 4: ':' where JSON expects the end of the file"},
      {R"(, 1)", "column 1: ',' where JSON expects a value"},
      {"{\"a\": [1,\n 2", "line 2, column 3: the file ends where JSON expects ',' or ']'"},
      {"", "line 1, column 1: the file ends where JSON expects a value"},
      {"  \n ", "line 2, column 2: the file ends where JSON expects a value"},
      {"{\"a\": \"b}", "column 7: this string is not closed"},
      // Bytes Python's utf-8 codec refuses, inside a string: a stray continuation byte, an
      // overlong form, a surrogate, a code point above U+10FFFF, a sequence cut short.
      {"{\"a\": \"\x80\"}", "column 8: byte 0x80 is not UTF-8 here"},
      {"{\"a\": \"\xc0\xaf\"}", "column 8: byte 0xc0 is not UTF-8 here"},
      {"{\"a\": \"\xed\xa0\x80\"}", "column 8: byte 0xed is not UTF-8 here"},
      {"{\"a\": \"\xf4\x90\x80\x80\"}", "column 8: byte 0xf4 is not UTF-8 here"},
      {"{\"a\": \"\xe2\x82\"}", "column 8: byte 0xe2 is not UTF-8 here"},
      {R"({"a": "\u12G4"})", R"(column 8: '\u12G4' is not a JSON escape (\u takes four hex digits))"},
      {R"({"a": "\u00"})", R"(column 8: '\u00"}' is not a JSON escape)"},
      // Columns count characters, as Python's do: the é and the emoji are one column each.
      {"{\"\xc3\xa9\": [1,, 2]}", "line 1, column 10: ',' where JSON expects a value"},
      {"{\"\xf0\x9f\x98\x80\": x}", "line 1, column 7: 'x' is not a JSON value"},
      {std::string(401, '[') + std::string(401, ']'), "column 401: more than 400 nested objects and arrays"},
  };
  for (const auto& [text, words] : cases) {
    const auto error = error_of(written("prge_json_structure.json", text));
    EXPECT_NE(error.find("prge_json_structure.json: not JSON: "), std::string::npos) << text << " -> " << error;
    EXPECT_NE(error.find(words), std::string::npos) << text << " -> " << error;
  }
}

TEST(JsonFile, WhatJsonReadsLoads) {
  // JSON allows a key over 1024 bytes and a line break before a key's ':'; yaml-cpp reads
  // neither as an implicit key, so keys are given to it as explicit ones.
  const std::string long_key(1500, 'k');
  const auto spread = written("prge_json_spread.json", "{\n  \"" + long_key + "\"\n  :\n  [1\n  ,\n  {\"b\"\n:\"c\"}]\n}\n");
  const YAML::Node json = prge::io::load_json_file(spread);
  ASSERT_TRUE(json[long_key].IsSequence());
  EXPECT_EQ(json[long_key][0].Scalar(), "1");
  EXPECT_EQ(json[long_key][1]["b"].Scalar(), "c");
  const std::vector<std::string> texts{"1", "\"x\"", "null", "[]", "{}", std::string(400, '[') + std::string(400, ']'),
                                       "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\""};
  for (const auto& scalar : texts) {  // any value is a JSON text; UTF-8 of 2, 3 and 4 bytes up to U+10FFFF
    EXPECT_EQ(error_of(written("prge_json_scalar.json", " " + scalar + " \n")), "") << scalar;
  }
}

TEST(JsonFile, LineEndsAndLongNumbersRead) {
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
