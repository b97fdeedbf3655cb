"""Sweeps: a base config crossed with a grid (and optional named variants). Each run
gets its own directory; a run finished with the same config (its stored config.yaml) is
skipped, so an interrupted sweep resumes where it stopped; one finished with other settings
is refused, naming the difference; a run another process is writing is left to it; a run that
fails is named (and marked in its directory for `prge report`), the runs after it go on, and the
sweep ends with an error naming each failed run.

    base: CONFIG.yaml or an inline config     grid: {key: [values]}   (crossed)
    variants: [{name: ..., key: value}]       output_root: runs/NAME
    mode: train (default) | speed             speed: {warmup, steps, shape}
    report: {title: ..., out: DIR}            (where `prge report` writes tables/figures)

`prge sweep FILE --gpus 0,1,...` runs one run per listed GPU at a time; `--only PATTERN` runs
the runs whose directory names match (shell patterns, e.g. 'mezo-*-seed42')."""
from __future__ import annotations

import fnmatch
import glob
import itertools
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from prge._core import NO_VALUE, ConfigError, parse_run_config
from prge.overrides import compose_yaml, key_parts, load_yaml, read_text, value_text
from prge import checkpoints, run_summary
from prge.run_dir import (FAILED_FILE, PATH_SETTINGS, RunDirError, RunInProgress, finished, keyed, mark_failed,
                          normalized, resumable, shown)
from prge.whitespace import (CONTROL_OR_SPACE, CONTROLS, SHOWN_VALUE_CHARS, shown_name, shown_names, shown_value,
                             visible)

SWEEP_KEYS = {"base", "output_root", "grid", "variants", "mode", "speed", "report"}
MODES = ("train", "speed")


NAME_MAX = 255  # bytes in a directory name (Linux, macOS)


# How grid_label has named runs, newest first: "current"; "paths" (2026-12-06, before this
# version: every value holding a / or \ named by its last part, as a path); "controls" (2026-12-04
# to 12-06: besides that, only C0 control characters and DEL in the value as _); "raw" (before
# 2026-12-04: nothing replaced). A run started under an earlier name keeps it (expand_sweep).
NAMINGS = ("current", "paths", "controls", "raw")
CONTROL_RUN = re.compile("[%s]+" % re.escape(CONTROLS))
PATH_KEYS = {tuple(key.split(".")) for key in PATH_SETTINGS}


def shown_point(point: dict) -> str:
    """A grid point {key: value} for a message, each value as shown_value quotes it (1 and '1'
    stay apart; a long value is cut)."""
    return "{" + ", ".join(f"{key!r}: {shown_value(value)}" for key, value in point.items()) + "}"


def grid_label(key: str, value, naming: str = "current") -> str:
    """The part of a run's directory name that one grid point's setting adds: the key's last
    part and the value (data.task: rte -> taskrte; data.label_words."1.5": good -> 1.5good);
    a run is VARIANT-PART-PART... (prge report strips the task's part to name a method across
    tasks). The value of a path key (run_dir.PATH_SETTINGS) adds its last part (model.name:
    /models/qwen2.5 -> nameqwen2.5), so that every run's directory is one level under the
    sweep's output_root; any other value (a template, a mapping of label words as Python writes
    it) adds all of it, a / as _ (in the key's part too). A run of control characters or
    whitespace other than a space (a template's line break, a no-break space) is one _, and so are
    spaces at the end. Values named
    alike are refused at expansion. naming: one of NAMINGS, the name a run started under an
    earlier version got."""
    text = str(value)
    as_path = (tuple(key_parts(key)) in PATH_KEYS) if naming == "current" else True
    if as_path and ("/" in text or "\\" in text):
        parts = [p for p in text.replace("\\", "/").split("/") if p not in ("", ".", "..")]
        text = parts[-1] if parts else "root"
    text = text.replace("/", "_")
    name = key_parts(key)[-1]
    if naming == "current":
        name = name.replace("/", "_")  # data.label_words."pos/neg"
    if naming in ("current", "paths"):
        name = CONTROL_OR_SPACE.sub("_", name)  # data.label_words."a\nb"
        text = re.sub(" +$", "_", CONTROL_OR_SPACE.sub("_", text))  # nor a name ending in spaces
    elif naming == "controls":
        text = CONTROL_RUN.sub("_", text)
    return f"{name}{text}"


@dataclass
class SweepFile:
    """A sweep file read and parsed once: its mapping, and the node tree that places its values."""
    path: Path
    text: str
    spec: dict
    node: yaml.Node | None

    def where(self, *keys) -> str:
        """'PATH:LINE:COL' of what `keys` reach (mapping keys: the key itself, where the config
        reader places a key too; list indices: the item), or 'PATH' where the file holds none."""
        node, mark = self.node, None
        for key in keys:
            if isinstance(node, yaml.MappingNode):
                found = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and
                              (k.value == str(key) or key is None and k.value in ("", "~", "null", "Null", "NULL"))),
                             None)
                node, mark = (found[1], found[0].start_mark) if found else (None, None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
                node = node.value[key]
                mark = node.start_mark
            else:
                node, mark = None, None
        return f"{self.path}:{mark.line + 1}:{mark.column + 1}" if mark else str(self.path)


def read_sweep(path: str | Path) -> SweepFile:
    """The sweep file, checked: its keys, their types, no null values; ValueError naming the place."""
    path = Path(path)
    text = read_text(path, "sweep file")
    spec, node = compose_yaml(text, str(path))
    sweep = SweepFile(path, text, spec or {}, node)
    spec, where = sweep.spec, sweep.where
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: a sweep file is a mapping of {', '.join(sorted(SWEEP_KEYS))}")
    unknown = [key for key in spec if key not in SWEEP_KEYS]
    if unknown:
        raise ValueError(f"{where(unknown[0])}: unknown sweep key(s) {shown_names(sorted(unknown, key=str))} "
                         f"(allowed: {', '.join(sorted(SWEEP_KEYS))})")
    for key, value in spec.items():  # as in a config: null is no value, not the default
        if value is None:
            raise ValueError(f"{where(key)}: {key}: {NO_VALUE}")
    if not isinstance(spec.get("output_root", "runs"), str) or not spec.get("output_root", "runs"):  # spaces: below
        raise ValueError(f"{where('output_root')}: output_root: expected a directory name, got {shown_value(spec['output_root'])}")
    for key in ("grid", "speed", "report"):
        if not isinstance(spec.get(key, {}), dict):
            raise ValueError(f"{where(key)}: {key}: expected a mapping of keys, got {shown_value(spec[key])}")
    for key in spec.get("grid", {}):
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"{where('grid', key)}: grid: {shown_value(key)} is not a key (expected section.key, e.g. "
                             "estimator.queries)")
    for i, variant in enumerate(spec.get("variants") or []):
        for key in variant if isinstance(variant, dict) else ():
            if not isinstance(key, str) or not key.strip():
                raise ValueError(f"{where('variants', i, key)}: variant {i + 1}: {shown_value(key)} is not a key (expected name "
                                 "or section.key)")
        if isinstance(variant, dict) and "name" in variant and (variant["name"] is None or
                                                                isinstance(variant["name"], (dict, list))):
            raise ValueError(f"{where('variants', i, 'name')}: variant {i + 1}: name: expected a name, got "
                             f"{shown_value(variant['name'])}")
    if spec.get("mode", "train") not in MODES:
        raise ValueError(f"{where('mode')}: mode must be one of {MODES}, got {shown_value(spec['mode'])}")
    # The sweep's own paths read a leading ~ as a run config's path keys do (csrc/prge/config.cpp).
    if isinstance(spec.get("base"), str):
        spec["base"] = expand_home(spec["base"], f"{where('base')}: base")
    if "output_root" in spec:
        spec["output_root"] = expand_home(spec["output_root"], f"{where('output_root')}: output_root")
    if "out" in (spec.get("report") or {}):
        out = spec["report"]["out"]
        if not isinstance(out, str):
            raise ValueError(f"{where('report', 'out')}: report.out: expected a directory name, got {shown_value(out)}")
        spec["report"]["out"] = expand_home(out, f"{where('report', 'out')}: report.out")
    from prge.speed import SPEED_KEYS

    unknown = set(spec.get("speed") or {}) - SPEED_KEYS
    if unknown:
        raise ValueError(f"{where('speed')}: unknown speed key(s) {shown_names(sorted(unknown, key=str))} "
                         f"(allowed: {', '.join(sorted(SPEED_KEYS))})")
    return sweep


def expand_home(value: str, place: str) -> str:
    """A path as a run config's path keys read it (prge._core.expand_path: a leading ~ / ~user as
    that home directory); its ValueError (whitespace alone or around, an unknown user) after
    `place`."""
    from prge._core import expand_path

    try:
        return expand_path(value)
    except ValueError as e:
        raise ValueError(f"{place}: {e}") from None


def load_sweep_spec(path: str | Path) -> dict:
    """The sweep file's mapping, checked (read_sweep)."""
    return read_sweep(path).spec


def inline_base_text(sweep: SweepFile) -> tuple[str, str]:
    """The text of a sweep file's inline `base:` mapping as the file holds it, after as many blank
    lines and spaces as precede it there, so that the config reader's line:column of a key is
    the sweep file's. When that text alone does not read back to the mapping (an alias of an
    anchor elsewhere in the file), the mapping written out again, named "PATH (base)" since its
    positions are then the written text's. Returns (text, source name)."""
    base, root, path = sweep.spec["base"], sweep.node, sweep.path
    node = next((value for key, value in root.value if key.value == "base"), None)
    start, end = node.start_mark, node.end_mark
    placed = "\n" * start.line + " " * start.column + sweep.text[start.index:end.index]
    try:
        if load_yaml(placed, str(path)) == base:
            return placed, str(path)
    except ValueError:
        pass
    return yaml.safe_dump(base, sort_keys=False, allow_unicode=True), f"{path} (base)"


def expand_sweep(path: str | Path, overrides: list[tuple[str, str]] | dict | None = None,
                 output_root: str | None = None) -> list[tuple[str, object]]:
    """(label, RunConfig) of every run; overrides ((dotted key, value text) pairs, from --set, or
    a dict of values) apply to every run, last. The config reader applies the variant's and the grid point's
    values and the overrides to the base config's parsed mapping (never re-serialised text)."""
    path = Path(path)
    sweep = read_sweep(path)
    spec, where = sweep.spec, sweep.where
    base = spec.get("base", {})
    if isinstance(base, str):
        base_path = (path.parent / base).resolve()
        if not base_path.is_file():
            raise FileNotFoundError(f"{where('base')}: base config not found: {visible(str(base_path))}")
        base_text, base_source = read_text(base_path, "base config"), str(base_path)
    elif isinstance(base, dict) and "base" in spec:  # inline: its own text, placed where it stands (the file's lines)
        base_text, base_source = inline_base_text(sweep)
    elif isinstance(base, dict):  # no base: every key its default
        base_text, base_source = "{}", str(path)
    else:
        raise ValueError(f"{where('base')}: base must be a config file name or a mapping")
    grid = spec.get("grid", {}) or {}
    for key, values in grid.items():
        try:  # its last key names the runs (grid_label), so it is read before any config is
            key_parts(str(key))
        except ValueError as e:
            raise ValueError(f"{where('grid', key)}: grid: {e}") from None
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where('grid', key)}: grid.{shown_name(key)} must be a non-empty list")
    variants = spec.get("variants") or [{"name": "run"}]
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise ValueError(f"{where('variants')}: variants must be a list of mappings, each "
                         "{name: ..., key: value, ...}")
    names = [str(v.get("name", "run")) for v in variants]
    for i, name in enumerate(names):
        if name.strip() and (name != name.strip() or CONTROL_OR_SPACE.search(name)):
            what = ("starts or ends with whitespace" if name != name.strip()
                    else "holds a control character or whitespace other than a space")
            raise ValueError(f"{where('variants', i, 'name')}: variant {i + 1} is named {shown_name(name, quoted=True)}, which "
                             f"{what}: a variant's name starts its runs' directory names, so remove it")
        if not name.strip() or "/" in name or "\\" in name or name in (".", ".."):
            raise ValueError(f"{where('variants', i, 'name')}: variant {i + 1} is named {shown_name(name, quoted=True)}: "
                             "a variant's "
                             "name starts its runs' directory names, so it cannot be empty, hold / or \\, or be "
                             ". or ..")
        if name in names[:i]:
            raise ValueError(f"{where('variants', i, 'name')}: variants {names.index(name) + 1} and {i + 1} are both "
                             f"named {shown_name(name, quoted=True)}: each "
                             "variant's runs go to directories named after it, so the names must differ"
                             + (" (a variant without name: is named run)" if name == "run" else ""))
    if output_root is not None and not str(output_root):  # only whitespace: expand_home says so
        raise ValueError(f"{path}: --output-root: an empty directory name")
    if output_root is not None:
        output_root = expand_home(str(output_root), f"{path}: --output-root")
    root = Path(output_root or spec.get("output_root", f"runs/{path.stem}"))
    root_origin = ("--output-root" if output_root else f"{where('output_root')}: output_root" if "output_root" in spec
                   else f"{path}: output_root (by default runs/{path.stem})")
    for key, values in grid.items():
        check_run_setting(key, values, f"{where('grid', key)}: grid {shown_name(key)}", root)
    for vi, variant in enumerate(variants):
        for key, value in variant.items():
            check_run_setting(key, [value], f"{where('variants', vi, key)}: variant {shown_name(names[vi])}: "
                                            f"{shown_name(key)}", root)
    varied = {tuple(key_parts(str(key))): key for key, values in grid.items() if len(values) > 1}
    for key, value in _as_text(overrides):
        check_run_setting(key, [value], f"{path}: --set {shown_name(key)}", root)
        parts = tuple(_parts_or_none(key) or ())  # --set a.b replaces a.b and all below it
        if parts and (grid_key := next((k for k in varied if k[:len(parts)] == parts or (
                parts[:len(k)] == k and any(_holds(v, parts[len(k):]) for v in grid[varied[k]]))), None)):
            example = grid_label(varied[grid_key], grid[varied[grid_key]][0])
            how = ("" if parts == grid_key else f" (it replaces all of {key})" if len(parts) < len(grid_key)
                   else " (a part of each value)")
            raise ValueError(f"{path}: --set {shown_name(key)}: the grid varies {shown_name(varied[grid_key])} "
                             f"({len(grid[varied[grid_key]])} values), which --set would replace in every run{how}, "
                             "so that the runs named after those values would all be one run: leave it out of --set "
                             f"(--only picks runs by name, e.g. --only {shlex.quote('*' + glob.escape(example) + '*')})")

    def configured(settings, label):
        try:
            return parse_run_config(base_text, base_source,
                                    settings + [("run.output_dir", value_text(shown(root / label)), root_origin)])
        except ConfigError as e:
            named = str(e).startswith(str(path))  # a grid or variant value: its place names the sweep
            raise ConfigError(f"{e} (run {visible(label)}{'' if named else f' of {path}'})") from None

    points = []  # (point, settings, label, the labels earlier versions gave it)
    for vi, variant in enumerate(variants):
        variant = dict(variant)
        name = str(variant.pop("name", "run"))
        for combo in itertools.product(*(list(enumerate(values)) for values in grid.values())):
            point = {k: value for k, (_, value) in zip(grid.keys(), combo)}
            # Each value named by its place in the sweep file (the config reader's messages start with it).
            settings = ([(k, value_text(x), f"{where('variants', vi, k)}: variant {shown_name(name)}: {shown_name(k)}")
                         for k, x in variant.items()]
                        + [(k, value_text(x), f"{where('grid', k, i)}: grid {shown_name(k)}") for k, (i, x) in zip(grid, combo)]
                        + [(k, x, f"--set {shown_name(k)}") for k, x in _as_text(overrides)])
            label = "-".join([name] + [grid_label(k, v) for k, v in point.items()])
            earlier = dict.fromkeys("-".join([name] + [grid_label(k, v, naming) for k, v in point.items()])
                                    for naming in NAMINGS[1:])
            points.append((point, settings, label, [e for e in earlier if e != label and "\0" not in e
                                                    and len(os.fsencode(e)) <= NAME_MAX]))
    current = {label for *_, label, _ in points}
    grid_keys = [".".join(key_parts(str(k))) for k in grid]
    kept = set()  # earlier names a run of this sweep keeps
    runs, warned, labels = [], set(), {}
    for point, settings, label, earlier in points:
        if label in labels:  # grid values 1 and '1', or keys ending alike (estimator.kind, optimizer.kind)
            raise ValueError(f"{path}: two runs would share the directory {shown(root / label)} "
                             f"({labels[label]} and {shown_point(point)}): make the grid values or keys distinct (a "
                             "path is named by its last part, and a / in another value, control characters and "
                             "whitespace other than a space are _: for values named alike, give each its own "
                             "variant with a name)")
        if len(os.fsencode(label)) > NAME_MAX:  # a short name of wide characters: its length in bytes too
            named = (shown_name(label) if len(label) > SHOWN_VALUE_CHARS
                     else f"{visible(label)} ({len(os.fsencode(label))} bytes)")
            raise ValueError(f"{path}: the run {shown_point(point)} would be named {named}, longer than a directory "
                             f"name may be ({NAME_MAX} bytes): give a long grid value its own variant with a short name")
        labels[label] = shown_point(point)
        config = None
        if not (root / label).exists():  # a run started under the name an earlier version gave it keeps it
            for before in earlier:
                if not (root / before / "config.yaml").is_file():
                    continue
                try:
                    there = configured(settings, before)
                except ConfigError:  # a name the reader refuses as a path (one ending in a space) holds no run
                    continue
                try:
                    stored = keyed(normalized((root / before / "config.yaml").read_text(encoding="utf-8")))
                except (OSError, UnicodeDecodeError):  # unreadable: not a run this sweep can take over
                    continue
                # This run's there: its grid values as the reader writes them (other settings are refused by
                # name when it starts, as under its current name); not another point's run, nor one kept already.
                wanted = keyed(normalized(there.to_yaml()))
                if before in kept or any(_below(stored, k) != _below(wanted, k) for k in grid_keys):
                    continue
                if before in current:
                    raise ValueError(f"{path}: {shown(root / before)} holds the run {label} (its grid values, "
                                     "under the name an earlier prge gave it), and that is now another run's name "
                                     f"in this sweep: rename the directory to {shown(root / label)}, or delete it")
                label, config = before, there
                kept.add(before)
                break
        runs.append((label, config or configured(settings, label)))
        for warning in runs[-1][1].warnings:  # once per sweep: "key: message" without the location
            message = warning.split(": ", 1)[-1]
            if message not in warned:
                warned.add(message)
                print(f"prge: warning: {path}: {message}", file=sys.stderr)
    return runs


def _below(settings: dict[str, str], key: str) -> dict[str, str]:
    """The settings (run_dir.keyed) at a dotted key, under it and above it (label_words is written
    as one flow mapping: a key inside it, data.label_words."1", is compared as the whole mapping)."""
    return {k: v for k, v in settings.items() if k == key or k.startswith(key + ".") or key.startswith(k + ".")}


def select_runs(path, runs: list[tuple[str, object]], patterns: list[str]) -> list[tuple[str, object]]:
    """The (label, RunConfig) runs whose directory name (the label) matches one of the shell
    patterns, in order."""
    names = [label for label, _ in runs]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise ValueError(f"{path}: --only {shown_value(pattern)} matches none of the sweep's {len(names)} runs "
                             f"(their names look like {', '.join(names[:3])})")
    return [run for run, name in zip(runs, names) if any(fnmatch.fnmatchcase(name, p) for p in patterns)]


def _holds(value, keys: tuple) -> bool:
    """Whether nested mappings `value` hold the key path `keys`."""
    for key in keys:  # a key path's parts are text; a mapping's keys may be numbers (label_words: {0: ...})
        found = next((k for k in value if str(k) == key), None) if isinstance(value, dict) else None
        if found is None:
            return False
        value = value[found]
    return True


def _parts_or_none(key) -> list[str] | None:
    try:
        return key_parts(str(key))
    except ValueError:  # not a key: the config reader names it
        return None


def check_run_setting(key, values: list, place: str, root: Path) -> None:
    """ValueError when a grid, a variant or --set gives run.output_dir (as run.output_dir or in a
    run: mapping): a sweep puts each run in output_root/<its label>, which would replace it; or
    gives run: a value that is not a mapping (the sweep's own run.output_dir would make it one, so
    that `--set run=null` left every run at the defaults, and other values were blamed on
    output_root). --set values come as YAML text."""
    if (parts := _parts_or_none(key)) is None:
        return

    def as_value(value):  # --set run='{output_dir: ...}' is text
        try:
            return load_yaml(value, place) if isinstance(value, str) else value
        except ValueError:  # not YAML: the config reader names it
            return {}

    if parts == ["run"]:
        for value in map(as_value, values):
            if not isinstance(value, dict):
                raise ValueError(f"{place}: " + ("no value (null): a run: section needs its keys" if value is None
                                                 else f"expected a mapping of run keys (run.steps, ...), got {shown_value(value)}"))
    if parts == ["run", "output_dir"] or (parts == ["run"] and any("output_dir" in as_value(v) for v in values)):
        named = place if parts == ["run", "output_dir"] else f"{place}.output_dir"
        raise ValueError(f"{named}: a sweep puts each run in output_root/<its label> (here {shown(root)}/...), "
                         "which would replace this value: set the sweep's output_root (or prge sweep "
                         "--output-root) instead")


def _as_text(overrides) -> list[tuple[str, str]]:
    """--set pairs (key, value text) as they are; a dict of Python values (from a notebook) as text."""
    if isinstance(overrides, dict):
        return [(k, value_text(v)) for k, v in overrides.items()]
    return list(overrides or [])


def run_notes(runs: list[tuple[str, object]], notes_of=None) -> list[str]:
    """Each distinct note over a sweep's (label, RunConfig) runs, once, with the runs it
    concerns; notes_of(config) -> the config's notes (default: preflight.learning_rate_note's)."""
    from prge.preflight import learning_rate_note

    notes_of = notes_of or (lambda config: [learning_rate_note(config)])
    notes: dict[str, list[str]] = {}
    for label, config in runs:
        for note in notes_of(config):
            if note:
                notes.setdefault(note, []).append(label)
    return [f"{note} ({len(labels)} run(s) of this sweep: {', '.join(labels[:3])}{' ...' if len(labels) > 3 else ''})"
            for note, labels in notes.items()]


def _finished(config) -> bool:
    """Whether the run is finished with this config (its data files need not be there any more);
    False for one of other settings, which the sweep refuses when it reaches it."""
    try:
        return finished(config.run.output_dir, config.to_yaml())
    except RunDirError:
        return False


def check_runs(runs: list[tuple[str, object]], speed: bool, shape: str | None = None) -> None:
    """Every run's task, model and device (prge.preflight.check_names; a speed run's device, and
    its model unless it times a named shape), and that model's config.json and data.max_length
    (check_model_config), before the first run starts: a bad grid value fails
    the sweep at once, not after the runs before it have trained."""
    from prge.preflight import check_model_config, check_names

    for _, config in runs:
        check_names(config, task=not speed, model=not (speed and shape), data=not _finished(config))
        if not (speed and shape):
            check_model_config(config)


def not_started_runs(path: str | Path, runs_dir: Path) -> list[str]:
    """The sweep's runs (expand_sweep) whose directory under runs_dir holds no run yet (no
    config.yaml, which a run writes first, and no failure mark, run_dir.mark_failed), as paths
    below runs_dir, for `prge report SWEEP`;
    with a note on stderr and none listed when the sweep no longer expands (its base moved)."""
    try:
        runs = expand_sweep(path, output_root=shown(runs_dir))  # ./~ stays a folder named ~
    except (ConfigError, ValueError, OSError) as e:
        print(f"[prge] note: {path} does not expand ({e}): its runs not started yet are not listed", file=sys.stderr)
        return []
    dirs = [Path(config.run.output_dir) for _, config in runs]
    return [d.relative_to(runs_dir).as_posix() if d.is_relative_to(runs_dir) else str(d)
            for d in dirs if not (d / "config.yaml").exists() and not (d / FAILED_FILE).exists()]


def check_same_inputs(out_dir: Path, config, fingerprints: dict) -> None:
    """A finished run is the sweep's run only on the model and data it trained on: RunDirError
    naming summary.json when the model directory holds another model now (its model_fingerprint;
    `fingerprints`: (model directory, adapter.init_from) -> fingerprint, computed once per sweep), or naming the file
    when a custom task's split file (data_files) holds other content now, as a finished run of
    other settings is refused (prge.run_dir.finished). A data file gone since (moved, deleted)
    leaves the run as it finished, with a note; summaries written before either was stored are
    taken as they are."""
    from prge.data.custom import data_files
    from prge.model_identity import check_same_model, model_fingerprint, starting_adapter
    from prge.models import config_model_dir

    summary = run_summary.read(out_dir / "summary.json")
    if (stored_model := summary.get("model_fingerprint")) is not None:
        model_dir, adapter_dir = config_model_dir(config), starting_adapter(config)
        if (model_dir, adapter_dir) not in fingerprints:
            fingerprints[model_dir, adapter_dir] = model_fingerprint(model_dir, adapter_dir)
        try:
            check_same_model(stored_model, model_dir, str(out_dir / "summary.json"),
                             current=fingerprints[model_dir, adapter_dir], adapter_dir=adapter_dir,
                             remedy="run into another --output-root, or delete that directory to train on the model "
                                    "as it is")
        except ValueError as e:
            raise RunDirError(str(e)) from None
    if config.data.task != "custom":
        return
    stored = summary.get("data_files") or {}
    now = data_files(config.data)
    for split, entry in stored.items():
        current = now.get(split)
        if current is None:
            print(f"[prge] note: {shown(out_dir)}: its {split} file is gone since it finished; the run stands as it finished",
                  file=sys.stderr)
        elif not isinstance(entry, dict) or current["sha256"] != entry.get("sha256"):
            raise RunDirError(f"{shown(out_dir)} holds a finished run on other data: its {split} file {current['path']} "
                              "holds other content now; run into another --output-root, or delete that directory "
                              "to train on the data as it is")


def run_sweep(path: str | Path, log=print, progress: bool = True, overrides: list[tuple[str, str]] | dict | None = None,
              output_root: str | None = None, gpus: list[str] | None = None,
              only: list[str] | None = None) -> list[dict]:
    """Every run of the sweep, one after another in this process; with `gpus`, as many at once
    as GPUs are listed, each in its own process on its own GPU (prge.sweep_gpus). `only`: shell
    patterns (fnmatch) on run directory names; the runs that match one, in the sweep's order.
    Raises ValueError for a pattern that matches no run, for a run finished earlier with other
    settings (when the sweep reaches it), and, once the other runs have ended, naming each run
    that failed (a refused resume, one task's damaged data file): one run's error does not stop
    the runs after it, as with `gpus`."""
    from prge.speed import run_speed
    from prge.train import RunInterrupted, run_training

    spec = load_sweep_spec(path)
    speed = spec.get("mode", "train") == "speed"
    if gpus and speed:
        raise ValueError(f"{path}: mode: speed measures one run at a time; run it without --gpus")
    summaries, pending, failed, fingerprints = [], [], [], {}
    runs = expand_sweep(path, overrides, output_root)
    if only:
        runs = select_runs(path, runs, [only] if isinstance(only, str) else list(only))
    check_runs(runs, speed, (spec.get("speed") or {}).get("shape"))
    if gpus:  # each run's own stderr goes to its log there; in this process, prge train prints them
        for note in run_notes(runs):
            print(note, file=sys.stderr)
    for i, (label, config) in enumerate(runs, 1):
        out_dir = Path(config.run.output_dir)
        if finished(out_dir, config.to_yaml()):
            try:
                check_same_inputs(out_dir, config, fingerprints)
            except RUN_ERRORS as e:  # other inputs, or ones that cannot be read
                failed.append(_named_failure(f"({i}/{len(runs)}) {label}", e, out_dir))
                continue
            log(f"[prge] ({i}/{len(runs)}) {label}: finished earlier, skipping")
            summaries.append(run_summary.read(out_dir / "summary.json"))
            continue
        # An interrupted run continues from its checkpoint; without one it starts again.
        resume = not speed and checkpoints.exists(out_dir) and resumable(out_dir, config.to_yaml())
        if gpus:
            pending.append((f"({i}/{len(runs)}) {label}", config, resume))
            continue
        log(f"[prge] ({i}/{len(runs)}) {label}")
        try:
            if speed:
                summaries.append(run_speed(config, log=log, overwrite=True, **(spec.get("speed") or {})))
            else:
                summaries.append(run_training(config, progress=progress, log=log, overwrite=True, resume=resume))
        except RunInProgress:
            log(f"[prge] ({i}/{len(runs)}) {label}: another process is running it, skipping")
        except RunInterrupted as e:  # Ctrl-C: the sweep, started again, resumes this run
            raise RunInterrupted(f"{label}: " + str(e).replace(
                "`prge train CONFIG --resume`", "the same `prge sweep` command (it resumes this run)")
                + (f"; {len(failed)} run(s) had failed before: {'; '.join(failed)}" if failed else "")) from None
        except BrokenPipeError:  # stdout's reader is gone: no run after this one could say anything
            raise
        except RUN_ERRORS as e:
            failed.append(_named_failure(f"({i}/{len(runs)}) {label}", e, out_dir))
    if pending:
        from prge.sweep_gpus import run_on_gpus

        summaries += run_on_gpus(pending, gpus, log)
    if failed:
        raise ValueError(f"{len(failed)} of {len(runs)} runs failed (each error above): {'; '.join(failed)}")
    return summaries


def _named_failure(run: str, error: Exception, out_dir: Path) -> str:
    """Says on stderr that `run` failed with `error` and that the sweep goes on, marks out_dir as
    failed (run_dir.mark_failed); returns `run`."""
    print(f"prge: error: {run}: {error}\n[prge] the sweep goes on with its other runs; this one is named again at "
          "the end", file=sys.stderr, flush=True)
    mark_failed(out_dir, str(error))
    return run


# What a command raises for its own input, which `prge` reports as `prge: error:` (prge.cli); a
# sweep names the run that raised it and goes on with the others.
RUN_ERRORS = (ConfigError, ValueError, OSError, KeyError, ImportError, RuntimeError, IndexError)
