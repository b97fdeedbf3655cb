// Bad YAML must fail at load time with a message naming the key, not mid-run.
#include "prge/config.h"

#include <gtest/gtest.h>
#include <pwd.h>

#include <cstdlib>

namespace {
std::string error_with(const std::string& yaml, const std::vector<prge::ConfigOverride>& overrides) {
  try {
    prge::parse_run_config(yaml, "test.yaml", overrides);
  } catch (const prge::ConfigError& e) {
    return e.what();
  }
  return "";
}

std::string error_of(const std::string& yaml) { return error_with(yaml, {}); }
}  // namespace

TEST(Config, DefaultsAndOverrides) {
  auto c = prge::parse_run_config("estimator: {queries: 4, parallel: queries}\noptimizer: {lr: 2e-4}\n");
  EXPECT_EQ(c.estimator.queries, 4);
  EXPECT_EQ(c.estimator.parallel, prge::Parallelism::Queries);
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 2e-4);
  EXPECT_EQ(c.adapter.rank, 16);
  EXPECT_EQ(c.adapter.targets.size(), 7u);
  // The normalised YAML parses back to the same config.
  auto again = prge::parse_run_config(c.to_yaml());
  EXPECT_EQ(again.to_yaml(), c.to_yaml());
}

TEST(Config, UnknownKeyNamesKeyAndAllowed) {
  auto msg = error_of("estimator:\n  querys: 4\n");
  EXPECT_NE(msg.find("test.yaml:2:3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("estimator.querys"), std::string::npos) << msg;
  EXPECT_NE(msg.find("allowed: kind, queries"), std::string::npos) << msg;
}

TEST(Config, BadValues) {
  EXPECT_NE(error_of("estimator: {queries: many}").find("expected an integer, got 'many'"), std::string::npos);
  EXPECT_NE(error_of("estimator: {kind: sgd}").find("allowed: prge, fzoo, mezo, first_order"), std::string::npos);
  EXPECT_NE(error_of("estimator: {queries: 0}").find("estimator.queries: must be >= 1"), std::string::npos);
  EXPECT_NE(error_of("model: {dtype: int8}").find("model.dtype"), std::string::npos);
  EXPECT_NE(error_of("adapter: {targets: [q_proj, qkv]}").find("unknown projection 'qkv'"), std::string::npos);
  EXPECT_NE(error_of("model: [1, 2]").find("expected a mapping"), std::string::npos);
}

TEST(Config, MalformedYamlReportsLine) {
  auto msg = error_of("model:\n  name: [unclosed\n");
  EXPECT_NE(msg.find("malformed YAML"), std::string::npos) << msg;
  EXPECT_NE(msg.find("test.yaml:"), std::string::npos) << msg;
}

TEST(Config, MezoDropsAdapters) {
  auto c = prge::parse_run_config("estimator: {kind: mezo, epsilon: 1e-3}\n");
  EXPECT_FALSE(c.use_adapter);
  EXPECT_EQ(c.estimator.parallel, prge::Parallelism::Sequential);
  EXPECT_NE(error_of("estimator: {kind: mezo, parallel: dual}").find("must be 'sequential' for mezo"), std::string::npos);
}

TEST(Config, MissingFile) {
  EXPECT_THROW(prge::load_run_config("/nonexistent/run.yaml"), prge::ConfigError);
}

TEST(Config, OldParallelSpellingsReadWithDeprecationWarning) {
  auto c = prge::parse_run_config("estimator:\n  parallel: single\n", "old.yaml");
  EXPECT_EQ(c.estimator.parallel, prge::Parallelism::Queries);
  ASSERT_EQ(c.warnings.size(), 1u);
  EXPECT_NE(c.warnings[0].find("old.yaml:2:13: estimator.parallel"), std::string::npos) << c.warnings[0];
  EXPECT_NE(c.warnings[0].find("now spelled 'queries'"), std::string::npos) << c.warnings[0];
  EXPECT_EQ(prge::parse_run_config("estimator: {parallel: none}").estimator.parallel, prge::Parallelism::Sequential);
  EXPECT_TRUE(prge::parse_run_config("estimator: {parallel: sequential}").warnings.empty());
  // The normalised YAML carries the new spelling only.
  EXPECT_NE(c.to_yaml().find("parallel: queries"), std::string::npos);
}

TEST(Config, CustomTaskFromConfigAlone) {
  auto c = prge::parse_run_config(
      "data:\n  task: custom\n  train_file: my/train.jsonl\n  eval_file: my/test.jsonl\n"
      "  template: \"Review: {text}\\nSentiment:\"\n"
      "  label_words: {positive: \" positive\", negative: \" negative\"}\n");
  EXPECT_EQ(c.data.prompt_template, "Review: {text}\nSentiment:");
  ASSERT_EQ(c.data.label_words.size(), 2u);
  EXPECT_EQ(c.data.label_words[0].first, "positive");  // document order kept
  EXPECT_EQ(c.data.label_words[1].second, " negative");
  EXPECT_EQ(c.data.label_field, "label");
  // to_yaml round-trips it, the newline in the template included.
  EXPECT_EQ(prge::parse_run_config(c.to_yaml()).to_yaml(), c.to_yaml());
  auto g = prge::parse_run_config(
      "data: {task: custom, train_file: a.csv, eval_file: b.csv, template: 'Q: {q}\nA:', response_field: a}\n");
  EXPECT_EQ(g.data.response_field, "a");
  EXPECT_EQ(prge::parse_run_config(g.to_yaml()).to_yaml(), g.to_yaml());
}

TEST(Config, AnErrorNamesTheLastOverrideThatWroteTheKey) {
  // An origin is the override's whole place (a sweep's "FILE:LINE:COL: grid KEY"): no config file
  // name before it, and the key only when it lies below the override's.
  const auto msg = error_with("run: {steps: 2}\n", {{"run.seed", "5", "s.yaml:3:5: variant a: run.seed"},
                                                   {"run.seed", "abc", "s.yaml:5:9: grid run.seed"}});
  EXPECT_EQ(msg, "s.yaml:5:9: grid run.seed: expected a non-negative integer, got 'abc'");
}

TEST(Config, CustomTaskErrorsNameTheKey) {
  EXPECT_NE(error_of("data: {task: sst2, train_file: a.jsonl}").find("data.train_file: applies to task: custom only"),
            std::string::npos);
  EXPECT_NE(error_of("data: {task: custom, eval_file: b, template: x, response_field: a}").find("data.task: task: custom needs data.train_file"),
            std::string::npos);
  EXPECT_NE(error_of("data: {task: custom, train_file: a, eval_file: b, template: x}")
                .find("data.task: task: custom needs exactly one of data.label_words"),
            std::string::npos);
  EXPECT_NE(error_of("data: {task: custom, train_file: a, eval_file: b, template: x, response_field: r, "
                     "choices_field: c}")
                .find("data.choices_field: task: custom needs exactly one of"),
            std::string::npos);
  // A --set that made the task custom is named, not the file's line.
  EXPECT_NE(error_with("data: {task: sst2}\n", {{"data.task", "custom", ""}})
                .find("test.yaml: --set data.task: task: custom needs data.train_file, data.eval_file, "
                      "data.template"),
            std::string::npos)
      << error_with("data: {task: sst2}\n", {{"data.task", "custom", ""}});
  EXPECT_NE(error_of("data: {task: custom, train_file: a, eval_file: b, template: x, label_words: [a, b]}")
                .find("data.label_words: expected a mapping"),
            std::string::npos);
}

// Issue 24: a config is read once and means one thing.

TEST(Config, OverridesEditTheParsedMappingAsYaml12) {
  const std::string custom =
      "data:\n  task: custom\n  train_file: a.csv\n  eval_file: b.csv\n  template: '{t}'\n"
      "  label_words: {positive: yes, negative: no}\n";
  // `yes` / `no` stay strings, with and without an override (YAML 1.2; the old path re-serialised
  // through PyYAML's YAML 1.1 and got true / false).
  for (const auto& c : {prge::parse_run_config(custom, "test.yaml"),
                        prge::parse_run_config(custom, "test.yaml", {{"run.steps", "3", ""}})}) {
    ASSERT_EQ(c.data.label_words.size(), 2u);
    EXPECT_EQ(c.data.label_words[0].second, "yes");
    EXPECT_EQ(c.data.label_words[1].second, "no");
  }
  auto c = prge::parse_run_config("adapter: null\nestimator: {kind: mezo}\n", "test.yaml",
                                  {{"estimator.queries", "3", ""}, {"optimizer.betas", "[0.8, 0.9]", ""},
                                   {"run.output_dir", "'a b'", ""}});
  EXPECT_EQ(c.estimator.queries, 3);
  EXPECT_DOUBLE_EQ(c.optimizer.beta1, 0.8);
  EXPECT_EQ(c.run.output_dir, "a b");
  // A section set to null (adapter: null) is replaced by the override's mapping.
  EXPECT_EQ(prge::parse_run_config("adapter: null\n", "t", {{"adapter.rank", "4", ""}}).adapter.rank, 4);
  // A boolean key takes true / false only: `yes` is a string under YAML 1.2.
  EXPECT_NE(error_of("adapter: {use_rslora: yes}").find("adapter.use_rslora: expected true or false, got 'yes'"),
            std::string::npos);
}

TEST(Config, OverrideErrorsNameTheSet) {
  auto msg = error_with("optimizer: {lr: 0.1}\n", {{"optimizer.lr", "fast", ""}});
  EXPECT_NE(msg.find("test.yaml: --set optimizer.lr: expected a finite number, got 'fast'"),
            std::string::npos) << msg;
  msg = error_with("optimizer:\n  lr: fast\n", {{"run.steps", "3", ""}});  // the file's own mistake: its line
  EXPECT_NE(msg.find("test.yaml:2:7: optimizer.lr"), std::string::npos) << msg;
  msg = error_with("run: {steps: 1}\n", {{"estimator.queries", "[1", ""}});
  EXPECT_NE(msg.find("--set estimator.queries: '[1': the value is not valid YAML"), std::string::npos) << msg;
  // A long value is shown by its start and its length, its characters whole (2-byte e-acute).
  std::string accents;
  for (int i = 0; i < 300; ++i) accents += "\xc3\xa9";
  msg = error_with("run: {steps: 1}\n", {{"run.steps", "[" + accents, ""}});
  EXPECT_NE(msg.find("--set run.steps: '[" + accents.substr(0, 2 * 79) + "...' (601 bytes): the value is not valid YAML"),
            std::string::npos) << msg;
  EXPECT_LT(msg.size(), 400u) << msg;
  msg = error_with("run: {steps: 1}\n", {{"run.steps", accents, ""}});
  EXPECT_NE(msg.find("run.steps: expected an integer, got '" + accents.substr(0, 2 * 80) + "...' (600 bytes)"),
            std::string::npos) << msg;
  msg = error_with("run: {steps: 1}\n", {{"data.protocol", accents, ""}});  // a value outside a closed set
  EXPECT_NE(msg.find("unknown protocol '" + accents.substr(0, 2 * 80) + "...' (600 bytes) (allowed: paper, mezo)"),
            std::string::npos) << msg;
  msg = error_with("run: {steps: 1}\n", {{"estimator.rng", accents, ""}});  // perturbation.cpp's closed sets
  EXPECT_NE(msg.find("unknown noise rng '" + accents.substr(0, 2 * 80) + "...' (600 bytes) (allowed: auto, torch, counter)"),
            std::string::npos) << msg;
  for (const auto* key : {"estimator.kind", "estimator.difference", "estimator.parallel", "optimizer.kind",
                          "optimizer.schedule", "model.dtype"}) {  // every closed set's name
    msg = error_with("run: {steps: 1}\n", {{key, "\x1b[31mred", ""}});
    EXPECT_NE(msg.find("'\\x1b[31mred'"), std::string::npos) << key << ": " << msg;
    EXPECT_EQ(msg.find('\x1b'), std::string::npos) << key << ": " << msg;
  }
  msg = error_with("run: {steps: 1}\n", {{"estimator.distribution", "\x1b[31mred", ""}});
  EXPECT_NE(msg.find("unknown noise distribution '\\x1b[31mred' (allowed: gaussian, rademacher)"), std::string::npos)
      << msg;
  msg = error_with("run: {steps: 1}\n", {{"run.steps", "\x1b[31mred", ""}});  // a control character escaped
  EXPECT_NE(msg.find("expected an integer, got '\\x1b[31mred'"), std::string::npos) << msg;
  msg = error_with("model: {name: x}\n", {{"model.name.deep", "1", ""}});
  EXPECT_NE(msg.find("'model.name' is not a section"), std::string::npos) << msg;
  msg = error_with("run: {steps: 1}\n", {{"runs.steps", "1", "s.yaml:2:3: grid runs.steps"}});
  EXPECT_NE(msg.find("s.yaml:2:3: grid runs.steps: runs: unknown key"), std::string::npos) << msg;
}

TEST(Config, AKeyHoldingADotIsQuotedInAnOverridePath) {
  const std::string yaml =
      "data:\n  task: custom\n  train_file: t.csv\n  eval_file: e.csv\n  template: \"{text}\"\n"
      "  label_words: {'1.5': fine, '2': great}\n";
  auto c = prge::parse_run_config(yaml, "test.yaml", {{"data.label_words.\"1.5\"", "good", ""}});
  ASSERT_EQ(c.data.label_words.size(), 2u);
  EXPECT_EQ(c.data.label_words[0], (std::pair<std::string, std::string>{"1.5", "good"}));
  EXPECT_EQ(c.data.label_words[1], (std::pair<std::string, std::string>{"2", "great"}));
  auto msg = error_with(yaml, {{"data.label_words.\"1.5\"", "''", ""}});  // named as typed, its key unquoted
  EXPECT_NE(msg.find("test.yaml: --set data.label_words.\"1.5\": expected a non-empty label word"), std::string::npos)
      << msg;
  for (const auto* bad : {"data.label_words.\"1.5", "data.\"label_words\"x", "data..x", "data.\"\"", "data."}) {
    msg = error_with(yaml, {{bad, "1", ""}});
    EXPECT_NE(msg.find("is not a key"), std::string::npos) << bad << ": " << msg;
  }
}

TEST(Config, DuplicateKeysNameBothLines) {
  auto msg = error_of("optimizer:\n  lr: 0.1\n  momentum: 0.9\n  lr: 0.5\n");
  EXPECT_NE(msg.find("test.yaml:4:3: optimizer.lr: duplicate key: it is also at line 2"), std::string::npos) << msg;
  msg = error_of("run: {steps: 1}\nrun: {steps: 2}\n");
  EXPECT_NE(msg.find("test.yaml:2:1: run: duplicate key: it is also at line 1"), std::string::npos) << msg;
  // Found before any override could hide it.
  msg = error_with("run:\n  steps: 1\n  steps: 2\n", {{"run.steps", "3", ""}});
  EXPECT_NE(msg.find("duplicate key"), std::string::npos) << msg;
}

TEST(Config, EmptyConfigIsAnErrorWithOrWithoutOverrides) {
  for (const std::string text : {"", "# only a comment\n", "\n\n"}) {
    EXPECT_NE(error_of(text).find("the config is empty"), std::string::npos);
    EXPECT_NE(error_with(text, {{"run.steps", "3", ""}}).find("the config is empty"), std::string::npos);
  }
  EXPECT_NE(error_of("- model\n- data\n").find("expected a mapping of sections"), std::string::npos);
}

TEST(Config, SettingsThatTrainNothingAreErrors) {
  EXPECT_NE(error_of("data: {task: custom, train_file: a, eval_file: b, template: x, "
                     "label_words: {good: ' yes', bad: ' yes'}}")
                .find("data.label_words.bad: label word ' yes' is also the word of label 'good'"),
            std::string::npos);
  EXPECT_NE(error_of("estimator: {queries: 1000000}").find("estimator.queries: 1000000 exceeds 4096"),
            std::string::npos);
  EXPECT_NE(error_of("estimator: {queries: 4096}\ndata: {batch_size: 64}").find("sequences in one forward"),
            std::string::npos);
  EXPECT_EQ(error_of("estimator: {queries: 4096, parallel: sequential}\ndata: {batch_size: 64}"), "");
}

// A path key reads a leading ~ as a shell does; a path of spaces is refused by name.
TEST(Config, PathKeysExpandHomeAndRefuseBlanks) {
  const char* saved = std::getenv("HOME");
  const std::string old_home = saved ? saved : "";
  setenv("HOME", "/home/tester/", 1);
  auto c = prge::parse_run_config(
      "model: {name: ~/models/m}\nadapter: {init_from: ~/adapters/a}\nrun: {output_dir: '~'}\n"
      "data: {task: custom, data_dir: ~/data, train_file: ~/t.csv, eval_file: e~/v.csv, template: '{t}',\n"
      "       label_words: {a: x, b: y}}\n",
      "test.yaml");
  EXPECT_EQ(c.model.name, "/home/tester/models/m");
  EXPECT_EQ(c.adapter.init_from, "/home/tester/adapters/a");
  EXPECT_EQ(c.run.output_dir, "/home/tester");
  EXPECT_EQ(c.data.data_dir, "/home/tester/data");
  EXPECT_EQ(c.data.train_file, "/home/tester/t.csv");
  EXPECT_EQ(c.data.eval_file, "e~/v.csv");  // only a leading ~ is the home directory
  EXPECT_EQ(prge::parse_run_config("run: {output_dir: runs/a}\n", "t").run.output_dir, "runs/a");
  // ~name is that account's home (root's exists wherever the tests run); an unknown one is named.
  const passwd* root = getpwnam("root");
  ASSERT_NE(root, nullptr);
  EXPECT_EQ(prge::parse_run_config("run: {output_dir: ~root/x}\n", "t").run.output_dir, std::string(root->pw_dir) + "/x");
  auto msg = error_of("run: {output_dir: ~no_such_user_prge/x}");
  EXPECT_NE(msg.find("run.output_dir: '~no_such_user_prge/x': no such user"), std::string::npos) << msg;
  msg = error_of("adapter: {init_from: '  '}");
  EXPECT_NE(msg.find("adapter.init_from: '  ' is only whitespace"), std::string::npos) << msg;
  msg = error_with("run: {steps: 1}\n", {{"run.output_dir", "\"\\t\"", ""}});
  EXPECT_NE(msg.find("--set run.output_dir: '\\t' is only whitespace"), std::string::npos) << msg;
  msg = error_of("run: {output_dir: ' ~/runs/a'}");  // a directory named " ~" otherwise
  EXPECT_NE(msg.find("run.output_dir: ' ~/runs/a' starts or ends with whitespace"), std::string::npos) << msg;
  msg = error_of("model: {name: 'models/m '}");
  EXPECT_NE(msg.find("model.name: 'models/m ' starts or ends with whitespace"), std::string::npos) << msg;
  EXPECT_EQ(prge::parse_run_config("run: {output_dir: 'a b'}\n", "t").run.output_dir, "a b");  // inner spaces stay
  // Unicode's spaces as Python's str.isspace() takes them (a no-break space pasted from a page),
  // shown escaped; one inside a name, or a character that only starts like one, stays.
  msg = error_of("data: {data_dir: \"data\xc2\xa0\"}");
  EXPECT_NE(msg.find("data.data_dir: 'data\\u00a0' starts or ends with whitespace"), std::string::npos) << msg;
  msg = error_of("adapter: {init_from: \"\xe3\x80\x80" "a\"}");
  EXPECT_NE(msg.find("adapter.init_from: '\\u3000a' starts or ends with whitespace"), std::string::npos) << msg;
  msg = error_of("run: {output_dir: \"\xe2\x80\xaf\xc2\xa0\"}");
  EXPECT_NE(msg.find("run.output_dir: '\\u202f\\u00a0' is only whitespace"), std::string::npos) << msg;
  EXPECT_EQ(prge::parse_run_config("run: {output_dir: \"a\xc2\xa0" "b\"}\n", "t").run.output_dir, "a\xc2\xa0" "b");
  // YAML's escapes \_ (U+00A0) and \N (U+0085), which yaml-cpp reads as one Latin-1 byte, are
  // UTF-8 in the config, in a file and in a --set value.
  EXPECT_EQ(prge::parse_run_config("run: {output_dir: \"a\\_b\\N\\x41\"}\n", "t").run.output_dir,
            "a\xc2\xa0" "b\xc2\x85" "A");
  EXPECT_EQ(prge::parse_run_config("run: {steps: 1}\n", "t", {{"run.output_dir", "\"x\\_y\"", ""}}).run.output_dir,
            "x\xc2\xa0" "y");
  msg = error_with("run: {steps: 1}\n", {{"run.output_dir", "\"x\\_\"", ""}});
  EXPECT_NE(msg.find("--set run.output_dir: 'x\\u00a0' starts or ends with whitespace"), std::string::npos) << msg;
  // A key with a no-break space is unknown, and shown escaped (it looks like a space prge strips).
  msg = error_with("run: {steps: 1}\n", {{"run.seed\xc2\xa0", "3", ""}});
  EXPECT_NE(msg.find("--set run.seed\\u00a0: unknown key"), std::string::npos) << msg;
  msg = error_of("mod\xc2\xa0" "el: {name: m}");
  EXPECT_NE(msg.find("mod\\u00a0el: unknown key"), std::string::npos) << msg;
  EXPECT_EQ(prge::parse_run_config("run: {output_dir: \"r\xc3\xa9\xe2\x80\x8b\"}\n", "t").run.output_dir,
            "r\xc3\xa9\xe2\x80\x8b");  // é, then a zero-width space, which is not whitespace
  // HOME as Python's expanduser takes it: set but empty, or /, is the root directory.
  setenv("HOME", "/", 1);
  EXPECT_EQ(prge::parse_run_config("run: {output_dir: ~/x}\n", "t").run.output_dir, "/x");
  setenv("HOME", "", 1);
  EXPECT_EQ(prge::parse_run_config("run: {output_dir: ~/x}\n", "t").run.output_dir, "/x");
  EXPECT_EQ(prge::parse_run_config("run: {output_dir: '~'}\n", "t").run.output_dir, "/");
  if (saved) setenv("HOME", old_home.c_str(), 1); else unsetenv("HOME");
}
