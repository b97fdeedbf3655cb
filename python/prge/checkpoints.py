"""A run's resumable checkpoint, every run.checkpoint_every steps and on Ctrl-C, as one atomic
unit: the directory checkpoint-<step>/ holds checkpoint.safetensors (trained tensors,
optimizer state, the trainer's step) and state.json (step, data-order position, counters, the
data's fingerprint, and a sha256 of those fields, so that an edited value is refused). It is written whole under checkpoint-<step>.tmp/, fsynced, renamed, and
made current by atomically replacing the pointer checkpoint.json ({"step", "directory"});
only then is the previous checkpoint removed. A kill at any moment leaves either the previous
or the new checkpoint current, never a mix of the two.

Under run.checkpoint_format: updates (full-parameter MeZO), checkpoint.safetensors is not
written: state.json's "updates" holds every step's projected gradients and fingerprints of the
base weights and of the weights at the checkpoint, and resuming replays the steps' updates on the
base weights (replay; MeZO's seed trick, Malladi et al. 2023, sec. 2), checked bit for bit.

The perturbations need no saved RNG state: z is regenerated from (seed, step). Resuming
restores all of it and cuts metrics.jsonl back to the checkpoint's step, so the resumed run
writes what an uninterrupted one would. A resume on other data than the checkpoint's (a
training file edited since) is refused unless allowed."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from pathlib import Path

from prge import durable
from prge.durable import boundary
from prge.jsonl import is_json_int
from prge.model_identity import FINGERPRINT, check_same_model
from prge.run_dir import RunDirError, shown

POINTER = "checkpoint.json"
TENSORS = "checkpoint.safetensors"
STATE = "state.json"
DIRECTORY = re.compile(r"^checkpoint-\d+(\.tmp)?$")


def exists(out_dir: Path) -> bool:
    return (Path(out_dir) / POINTER).is_file()


def data_fingerprint(splits: dict[str, list]) -> dict[str, str]:
    """sha256 of every split's encoded examples (token ids, labels, options, partial-scoring
    pairs, and a response's whole text where data.max_length cut its tokens): equal exactly when
    the run would train and evaluate on the same tokens and references. A response that was not
    cut is its tokens, and an example without partial-scoring pairs has no `partial` field, as
    fingerprints written before references and partial scoring existed have them."""
    return _fingerprint(splits, null_partial=False)


def earlier_data_fingerprints(splits: dict[str, list]) -> list[dict[str, str]]:
    """The other forms of data_fingerprint(splits) that a checkpoint of the same data may hold,
    written by earlier prge versions (each accepted on resume as the current one): `partial:
    null` kept (commits 295967f, where EncodedExample.partial came, to 3031933)."""
    return [_fingerprint(splits, null_partial=True)]


def _fingerprint(splits: dict[str, list], null_partial: bool) -> dict[str, str]:
    out = {}
    for name, examples in splits.items():
        digest = hashlib.sha256()
        for e in examples:
            fields = dict(dataclasses.asdict(e) if dataclasses.is_dataclass(e) else vars(e))
            cut = fields.get("answer_ids") is not None and fields.get("answer_length", 0) > len(fields["answer_ids"])
            if not cut:
                fields.pop("reference", None)
                fields.pop("answer_length", None)
            if fields.get("partial", ...) is None and not null_partial:
                del fields["partial"]
            digest.update(json.dumps(fields, sort_keys=True, default=str).encode())
            digest.update(b"\n")
        out[name] = f"{len(examples)}:{digest.hexdigest()}"
    return out


def save(out_dir: Path, trainer, state: dict) -> None:
    """Writes the checkpoint of state["step"] and makes it current (see the module's text)."""
    out_dir = Path(out_dir)
    name = f"checkpoint-{state['step']}"
    pointer = read_pointer(out_dir)
    if pointer and pointer.get("directory") == name and (out_dir / name).is_dir():
        return  # this very step is current already
    boundary(f"{name}: begin")
    staging, final = out_dir / f"{name}.tmp", out_dir / name
    durable.remove(staging)
    try:
        staging.mkdir()
    except OSError as e:
        raise OSError(f"{staging}: cannot write ({e.strerror})") from e
    if state.get("updates") is None:  # else the steps' updates in the state rebuild the weights
        trainer.save_checkpoint(str(staging / TENSORS))
        durable.fsync_file(staging / TENSORS)
    boundary(f"{name}: {TENSORS} written")
    durable.write_json(staging / STATE, {**state, DIGEST_KEY: state_digest(state)})
    boundary(f"{name}: {STATE} written")
    durable.fsync_dir(staging)
    durable.remove(final)  # a leftover of a run killed before its pointer moved
    os.rename(staging, final)
    durable.fsync_dir(out_dir)
    boundary(f"{name}: directory in place")
    durable.write_json(out_dir / POINTER, {"step": state["step"], "directory": name})
    boundary(f"{name}: current")
    _remove_others(out_dir, keep=name)
    boundary(f"{name}: previous removed")


def _remove_others(out_dir: Path, keep: str | None) -> None:
    for path in out_dir.iterdir():
        if DIRECTORY.match(path.name) and path.name != keep:
            durable.remove(path)
    if keep is not None:
        durable.remove(out_dir / TENSORS)  # the single-file layout of earlier versions


def read_pointer(out_dir: Path) -> dict | None:
    """The run folder's checkpoint pointer ({"step", "directory"}), or None without one. Raises
    ValueError naming the file when it does not read as one."""
    path = Path(out_dir) / POINTER
    if not path.is_file():
        return None
    pointer = durable.read_json(path, "checkpoint pointer")
    if not isinstance(pointer, dict) or not isinstance(pointer.get("step"), int):
        raise ValueError(f"{shown(path)}: not a checkpoint pointer prge wrote (expected an object with an integer step)")
    return pointer


# What estimator.rng resolves to (Trainer.rng; auto is never stored): csrc/prge/perturbation.cpp's NoiseRng.
RESOLVED_GENERATORS = ("torch", "counter")


def load(out_dir: Path, trainer, fingerprint: dict | None = None, allow_changed_data: bool = False,
         clean: bool = True, sampler=None, model: tuple | None = None,
         changed_data_option: str | None = "--resume-changed-data", earlier_fingerprints=None) -> dict | None:
    """The current checkpoint's state, with its tensors loaded into `trainer` and its data-order
    position into `sampler` (a BatchSampler; restored first, before a MeZO replay); None when
    the run has written no checkpoint yet. `clean`: remove what a killed save left beside it
    (the directory's writer only). `model`: (model directory, its model_identity fingerprint,
    the adapter.init_from the run starts from or None),
    which must be the model the checkpoint's run trained on (where the state stores one).
    `changed_data_option`: what the changed-data error offers (None where the command has none).
    `earlier_fingerprints`: a function giving the same data's fingerprints in earlier versions'
    forms (earlier_data_fingerprints), called only where the stored one is not `fingerprint`.
    Raises RunDirError for a checkpoint that cannot be resumed or whose state is damaged
    (naming its file), ValueError naming the state file for another model, ValueError /
    RuntimeError naming a damaged tensor."""
    out_dir = Path(out_dir)
    pointer = read_pointer(out_dir)
    if pointer is None:
        return None
    state_path = _state_path(out_dir, pointer)
    if "directory" in pointer:
        directory = state_path.parent
        if not DIRECTORY.match(directory.name) or not directory.is_dir():
            raise RunDirError(f"{shown(out_dir / POINTER)}: names {directory.name}, which is not there")
        state = durable.read_json(state_path, "checkpoint state")
    else:  # earlier versions: checkpoint.json is the state, the tensors lie beside it
        directory, state = out_dir, pointer
    if not isinstance(state, dict) or state.get("step") != pointer["step"]:
        raise RunDirError(f"{shown(state_path)}: not the state of step {pointer['step']}: the checkpoint is damaged")
    check_state(state_path, state, needs_data=directory != out_dir)
    _check_same_data(out_dir, state.get("data"), fingerprint, allow_changed_data, changed_data_option,
                     earlier_fingerprints)
    dropped = 0
    if sampler is not None:
        try:
            dropped = sampler.set_state(state["sampler"], changed_data=allow_changed_data)
        except ValueError as e:
            raise RunDirError(f"{shown(state_path)}: {DAMAGED}: sampler: {e}") from None
    replays = not (directory / TENSORS).exists() and directory != out_dir  # run.checkpoint_format: updates
    if replays and "updates" not in state:
        raise RunDirError(f"{shown(directory)}: neither {TENSORS} nor the updates of {STATE}: the checkpoint is damaged")
    # their form named first, then whether they are the ones written
    updates = stored_updates(state_path, state) if "updates" in state else None
    check_digest(state_path, state)
    if model is not None:
        check_same_model(state.get("model"), model[0], str(state_path), current=model[1], adapter_dir=model[2])
    if dropped:
        print(f"prge: warning: {shown(out_dir)}: the training data has {sampler.n} examples now; the {dropped} of "
              "this epoch's order past them are skipped (--resume-changed-data)")
    if replays:
        replay(state_path, state, trainer, updates)
    else:
        trainer.load_checkpoint(str(directory / TENSORS))  # non-finite tensors are named there
        if updates is not None:  # the steps' updates go on from these weights: they must be the ones they reached
            reached = updates[2]
            if trainer.state_fingerprint() != reached:
                raise RunDirError(f"{shown(state_path)}: the updates reach weights and optimizer state with fingerprint "
                                  f"{reached}, {shown(directory / TENSORS)} holds {trainer.state_fingerprint()}: the "
                                  "checkpoint is damaged or was edited")
    if trainer.step_count != state["step"]:
        raise RunDirError(f"{shown(out_dir)}: {shown(directory / TENSORS)} is at step {trainer.step_count}, its "
                          f"state at step {state['step']}: the checkpoint is torn, resume is not possible")
    if clean:
        _remove_others(out_dir, keep=directory.name if directory != out_dir else None)
    return state


DAMAGED = "the checkpoint is damaged or was edited"
INT64_MAX = 2 ** 63 - 1
DIGEST = re.compile(r"\d+:[0-9a-f]{64}")  # data_fingerprint's "examples:sha256"


def check_state(path: Path, state: dict, needs_data: bool = True) -> None:
    """RunDirError naming `path` (the checkpoint's state file) where the fields a resume takes
    over are not what prge writes: rng (a generator a step draws from), step, forward_passes and
    sequences (integers >= 0 that int64 holds), step_seconds (at most `step` finite times >= 0,
    seconds, with a finite sum), data (data_fingerprint's split -> "examples:sha256"; may be
    absent only where not `needs_data`: the single-file checkpoints of earlier versions), a
    sampler (its content is checked where it is restored: BatchSampler.set_state), and a model
    fingerprint where present (64 hex digits: prge.model_identity; absent in earlier versions')."""
    damaged = f"{shown(path)}: {DAMAGED}"
    if state.get("rng", "torch") not in RESOLVED_GENERATORS:
        raise RunDirError(f"{damaged}: rng: {json.dumps(state['rng'])} is not a generator a step draws from "
                          f"({' or '.join(RESOLVED_GENERATORS)})")
    for key in ("step", "forward_passes", "sequences"):
        value = state.get(key)
        if not is_json_int(value) or not 0 <= value <= INT64_MAX:
            raise RunDirError(f"{damaged}: {key} is {json.dumps(value)}, not a count (an integer >= 0 that int64 holds)")
    seconds = state.get("step_seconds")
    if not isinstance(seconds, list) or len(seconds) > state["step"] or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < math.inf for x in seconds) \
            or not math.isfinite(sum(seconds)):
        raise RunDirError(f"{damaged}: step_seconds is not a list of at most {state['step']} steps' times "
                          "(numbers >= 0, seconds, with a finite sum)")
    data = state.get("data")
    if (data is not None or needs_data) and not (isinstance(data, dict) and data and all(
            isinstance(v, str) and DIGEST.fullmatch(v) for v in data.values())):
        raise RunDirError(f"{damaged}: data is {'missing' if data is None else 'not'} the data's fingerprint prge "
                          "writes (split -> \"examples:sha256\")")
    if "sampler" not in state:
        raise RunDirError(f"{damaged}: it has no sampler (the data order's position)")
    if "model" in state and not (isinstance(state["model"], str) and FINGERPRINT.fullmatch(state["model"])):
        raise RunDirError(f"{damaged}: model is not the model's fingerprint prge writes (64 hex digits)")


DIGEST_KEY = "sha256"  # state.json's digest of its other fields, written last


def state_digest(state: dict) -> str:
    """sha256 of a checkpoint state's fields but DIGEST_KEY, as sorted compact JSON."""
    fields = {k: v for k, v in state.items() if k != DIGEST_KEY}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_digest(path: Path, state: dict) -> None:
    """RunDirError naming `path` when state.json's fields are not the ones it was written with (a
    valid-looking edit check_state cannot see: another data order, other counters, other
    updates). States of earlier versions, written without one, are taken as they are."""
    if DIGEST_KEY in state and state[DIGEST_KEY] != state_digest(state):
        raise RunDirError(f"{shown(path)}: {DAMAGED}: its fields do not match the sha256 written with them (a value was "
                          "changed after the checkpoint was saved); resume from an intact copy, or start again")


def _state_path(out_dir: Path, pointer: dict) -> Path:
    return Path(out_dir) / str(pointer["directory"]) / STATE if "directory" in pointer else Path(out_dir) / POINTER


def state_file(out_dir: Path) -> Path:
    """The current checkpoint's state file: checkpoint-<step>/state.json, or checkpoint.json in
    the single-file layout of earlier versions."""
    return _state_path(out_dir, read_pointer(out_dir) or {})


def stored_updates(path: Path, state: dict) -> tuple[list[list[float]], str, str]:
    """(projected gradients of steps 1..state["step"], base fingerprint, checkpoint fingerprint)
    of a run.checkpoint_format: updates checkpoint's state (state.json at `path`); RunDirError
    naming the file where they are missing or not what prge wrote (lists of finite numbers that
    float32 holds, 16-hex-digit fingerprints)."""
    damaged = f"{shown(path)}: {DAMAGED}"
    updates = state.get("updates")
    if not isinstance(updates, dict):
        raise RunDirError(f"{damaged}: updates is not the object of steps and fingerprints prge writes")
    fingerprints = [updates.get(key) for key in ("base", "weights")]
    if not all(isinstance(f, str) and re.fullmatch(r"[0-9a-f]{16}", f) for f in fingerprints):
        raise RunDirError(f"{damaged}: updates.base and updates.weights must be 16-hex-digit fingerprints")
    grads = updates.get("projected_grads")
    if not isinstance(grads, list) or len(grads) != state["step"]:
        raise RunDirError(f"{damaged}: updates.projected_grads is not a list of {state['step']} steps' projected "
                          "gradients (lists of numbers)")
    out = []
    for step, g in enumerate(grads, 1):
        try:
            values = [float(x) for x in g if isinstance(x, (int, float)) and not isinstance(x, bool)]
        except OverflowError:
            values = []
        if not isinstance(g, list) or len(values) != len(g) or not all(
                math.isfinite(x) and abs(x) <= FLOAT32_MAX for x in values):
            raise RunDirError(f"{damaged}: updates.projected_grads, step {step}: not a list of finite numbers "
                              "(float32 range)")
        out.append(values)
    return out, fingerprints[0], fingerprints[1]


FLOAT32_MAX = 3.4028234663852886e38


def replay(path: Path, state: dict, trainer, updates: tuple | None = None, log=print) -> None:
    """The weights and optimizer state of a run.checkpoint_format: updates checkpoint (state.json
    at `path`, read as `state`): the trainer's model must hold the base weights the run started
    from (Trainer.state_fingerprint, stored as updates.base); Trainer.replay_step applies each
    stored step's update from its projected gradients, as the step applied it; the result must
    be the checkpoint's state bit for bit (updates.weights). RunDirError naming the file
    otherwise: another base model, damaged updates, or a device, build or torch version that
    computes the update differently (resume there, or start again). `updates`: stored_updates'
    reading of them, where the caller has it already."""
    grads, base, reached = updates or stored_updates(path, state)
    if trainer.step_count != 0:
        raise RunDirError(f"{shown(path)}: updates replay on the base weights, and this trainer is at step {trainer.step_count}")
    if trainer.state_fingerprint() != base:
        raise RunDirError(f"{shown(path)}: the model's weights are not the ones this run started from (fingerprint "
                          f"{trainer.state_fingerprint()}, the run's {base}): model.name names another checkpoint, or "
                          "its files changed; a checkpoint of updates is replayed on the same base weights")
    log(f"[prge] replaying the updates of steps 1-{state['step']} on the base weights")
    try:
        for g in grads:
            trainer.replay_step(g)
    except ValueError as e:
        raise RunDirError(f"{shown(path)}: {e}: the checkpoint's updates do not fit this run") from None
    if trainer.state_fingerprint() != reached:
        raise RunDirError(f"{shown(path)}: replaying {state['step']} steps' updates gave weights and optimizer state with "
                          f"fingerprint {trainer.state_fingerprint()}, the checkpoint's are {reached}: the updates were "
                          "edited or damaged, or this device, build or torch version computes the update differently "
                          "from the one that wrote them (resume there, or start the run again)")


def generator_note(state: dict, trainer, config) -> str | None:
    """A note when a checkpoint's steps drew z from another generator than `trainer` draws from:
    estimator.rng: auto resolves by version, device and estimator. A checkpoint written before
    checkpoints recorded their generator is taken to have drawn a MeZO run's z on CUDA under auto
    from the torch generator (auto's meaning then). The estimate keeps its distribution; only
    the stream of z changes."""
    stored = state.get("rng")
    if stored is None and config.estimator.kind == "mezo" and config.estimator.rng == "auto" \
            and config.model.device.startswith("cuda"):
        stored = "torch"
    if stored is None or stored == trainer.rng:
        return None
    return (f"[prge] note: steps 1-{state['step']} drew z from the {stored} generator (estimator.rng: "
            f"{config.estimator.rng} then), the steps from here on draw from {trainer.rng}: the estimate is the "
            f"same in distribution, the stream of z is another. For one stream throughout, start the run "
            f"again with estimator.rng: {stored}")


def _check_same_data(out_dir: Path, stored: dict | None, fingerprint: dict | None, allow: bool,
                     option: str | None, earlier=None) -> None:
    if fingerprint is None or stored is None or stored == fingerprint:
        return
    forms = [fingerprint, *(earlier() if earlier is not None else [])]
    if stored in forms:  # the same data, fingerprinted by an earlier version
        return
    # The splits that changed: against the form the checkpoint's fingerprint shares most splits with.
    fingerprint = max(forms, key=lambda form: sum(stored.get(s) == form[s] for s in form))
    changed = [s for s in fingerprint if stored.get(s) != fingerprint[s]] or sorted(stored)
    if allow:
        print(f"prge: warning: {shown(out_dir)}: the {', '.join(changed)} data changed since the checkpoint; "
              "continuing on the new data (--resume-changed-data)")
        return
    detail = "; ".join(f"{s}: {stored.get(s, 'none')} examples:sha256 then, {fingerprint.get(s, 'none')} now"
                       for s in changed)
    raise RunDirError(f"{shown(out_dir)}: the {', '.join(changed)} data differ from the checkpoint's ({detail}): a data "
                      "file was edited or moved since the run started. "
                      + (f"Resume on the new data with {option}, or restore the files" if option else
                         "Restore the files, or start the run again with --overwrite"))


def metrics_until(path: Path, step: int) -> list[dict]:
    """The records of metrics.jsonl up to `step`, with the file cut back to them."""
    records = []
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut by the kill
            if record.get("step", 0) > step:
                break
            records.append(record)
    durable.write_text(path, "".join(json.dumps(r) + "\n" for r in records))
    return records
