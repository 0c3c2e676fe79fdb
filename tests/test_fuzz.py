"""Fuzzing where users' files enter: the IDX reader and the config loader must answer any input
with a result or the project's own clear error (DataError / ConfigError), never another
exception from deep inside numpy, gzip or YAML."""
import gzip
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from wganlab.config import PRESET_DIR, Config, ConfigError, from_dict, load_config
from wganlab.data import DataError, load_idx_folder, parse_idx, read_idx

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

_CODES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=_CODES[code]).tobytes()


@st.composite
def valid_idx(draw):
    code = draw(st.sampled_from(sorted(_CODES)))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=1, max_size=4)))
    data = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape) % 100
    return idx_bytes(data, code)


@st.composite
def mutated(draw, base):
    raw = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "dims"]))
        if op == "flip" and raw:
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] = draw(st.integers(0, 255))
        elif op == "truncate":
            raw = raw[:draw(st.integers(0, len(raw)))]
        elif op == "insert":
            i = draw(st.integers(0, len(raw)))
            raw[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and raw:
            i = draw(st.integers(0, len(raw) - 1))
            del raw[i:i + draw(st.integers(1, 8))]
        elif op == "dims" and len(raw) >= 8:  # absurd dimensions: overflow, huge rank
            raw[3] = draw(st.integers(0, 255))
            raw[4:8] = struct.pack(">I", draw(st.integers(0, 2**32 - 1)))
    return bytes(raw)


def check_array(out) -> None:
    assert isinstance(out, np.ndarray)


@FUZZ
@given(st.binary(max_size=64))
def test_parse_idx_random_bytes(raw):
    try:
        check_array(parse_idx(raw))
    except DataError:
        pass


@FUZZ
@given(mutated(valid_idx()))
def test_parse_idx_mutations(raw):
    try:
        out = parse_idx(raw)
    except DataError:
        return
    assert out.size * out.itemsize == len(raw) - 4 - 4 * out.ndim


@FUZZ
@given(raw=mutated(valid_idx()), gz=st.booleans(), cut=st.integers(0, 40))
def test_read_idx_files(raw, gz, cut):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x-idx3-ubyte.gz"
        blob = gzip.compress(raw) if gz else raw
        if gz and cut:  # a damaged archive
            blob = blob[:-cut] if cut % 2 else blob[:cut] + bytes(8) + blob[cut + 8:]
        path.write_bytes(blob)
        try:
            check_array(read_idx(path))
        except DataError as e:
            assert str(path) in str(e)


@st.composite
def idx_folder_files(draw):
    n = draw(st.integers(0, 3))
    images = idx_bytes(np.zeros((n, draw(st.integers(0, 3)), 2), dtype=np.uint8))
    labels = idx_bytes(np.arange(draw(st.sampled_from([n, n + 1]))) % 10)
    if draw(st.booleans()):
        images = draw(mutated(st.just(images)))
    if draw(st.booleans()):
        labels = draw(mutated(st.just(labels)))
    if draw(st.booleans()):  # labels stored as floats, images as int16
        labels = idx_bytes(np.arange(n, dtype=np.float32), 0x0D)
    return images, labels


@FUZZ
@given(files=idx_folder_files(), which=st.sampled_from(["both", "no-labels", "no-images"]))
def test_load_idx_folder(files, which):
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        if which != "no-images":
            (folder / "train-images-idx3-ubyte").write_bytes(files[0])
        if which != "no-labels":
            (folder / "train-labels-idx1-ubyte").write_bytes(files[1])
        try:
            x, y = load_idx_folder(folder)
        except DataError:
            return
        assert x.ndim == 3 and len(x) == len(y) > 0 and x.dtype == np.uint8


def test_load_idx_folder_problems_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_idx_folder(tmp_path / "missing")
    with pytest.raises(DataError, match="no train-"):
        load_idx_folder(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((2, 3, 3), np.uint8)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(DataError, match="2 images but .* 3 labels"):
        load_idx_folder(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01\0\0\0\x05ab")
    with pytest.raises(DataError, match="truncated"):
        load_idx_folder(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(DataError, match="magic"):
        load_idx_folder(tmp_path)


# ----------------------------------------------------------------------------- configs

def _keys(section) -> list[str]:
    return list(Config().to_dict()[section]) if section != "seed" else []


SECTIONS = ["data", "model", "constraint", "train", "optim"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=6), st.sampled_from(["clip", "gp", "invclip", "toy", "mlp",
                                                          "8gaussians", "auto", "adam"]))
values = st.recursive(scalars, lambda v: st.lists(v, max_size=3)
                      | st.dictionaries(st.text(max_size=4), v, max_size=3), max_leaves=6)


@st.composite
def raw_configs(draw):
    raw = {}
    for section in draw(st.lists(st.sampled_from(SECTIONS + ["seed", "bogus"]), max_size=4)):
        if section in ("seed", "bogus"):
            raw[section] = draw(values)
            continue
        keys = _keys(section) + ["nope"]
        if section == "optim":
            raw[section] = {draw(st.sampled_from(["critic", "generator", "x"])):
                            draw(st.dictionaries(st.sampled_from(["name", "lr", "betas", "eps",
                                                                  "momentum"]), values,
                                                 max_size=3) | values)}
            continue
        raw[section] = draw(st.dictionaries(st.sampled_from(keys), values, max_size=4) | values)
    return raw


@FUZZ
@given(raw_configs())
def test_from_dict_random(raw):
    try:
        cfg = from_dict(raw)
    except ConfigError:
        return
    assert isinstance(cfg.digest(), str)


@FUZZ
@given(st.sampled_from(sorted(PRESET_DIR.glob("*.yaml"))), st.data())
def test_load_config_mutated_yaml(preset, data):
    text = preset.read_text()
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(text)))
        j = data.draw(st.integers(i, min(len(text), i + 12)))
        text = text[:i] + data.draw(st.sampled_from(
            ["", ":", "- ", "  ", "\n", "&a", "*a", "!!python/object:os.system", "[", "{", "}",
             "-1", "1e999", ".nan", "2001-13-01", "~", "'", "\t", "\0", "x: {y: *a}"]
            + [data.draw(st.text(max_size=5))])) + text[j:]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_bytes(text.encode("utf-8", "replace"))
        try:
            load_config(path)
        except ConfigError:
            pass


@FUZZ
@given(st.binary(max_size=200))
def test_load_config_random_bytes(blob):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_bytes(blob)
        try:
            load_config(path)
        except ConfigError:
            pass


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["train.generator_steps", "seed", "data", "x.y",
                                           "constraint.variants.v", "optim.critic.betas",
                                           "train", "", "data.name.z"]),
                          st.text(max_size=12) | st.sampled_from(["2001-13-01", "&a [*a]",
                                                                 "[1, 2", "{a: 1}", "null"])),
                max_size=3))
def test_load_config_overrides(pairs):
    try:
        load_config("toy", [f"{k}={v}" for k, v in pairs])
    except ConfigError:
        pass


def test_self_referencing_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("constraint:\n  variants: &a\n    v: *a\n")
    with pytest.raises(ConfigError):
        load_config(path)
    path.write_text("train: {generator_steps: 2001-13-01}\n")
    with pytest.raises(ConfigError, match="c.yaml"):
        load_config(path)


# ----------------------------------------------------------------------------- checkpoints

@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    from conftest import tiny_config
    from wganlab.train import Trainer
    out = tmp_path_factory.mktemp("fuzzckpt")
    Trainer(tiny_config(**{"train.generator_steps": 2, "constraint.name": "gp"}), out).run()
    return out / "checkpoints" / "step_0000002"


@st.composite
def json_mutation(draw, text: str):
    """A state.json edited the way a buggy tool (or an attacker) might: values swapped for
    others of another type, keys dropped, lists cut."""
    import json as _json
    tree = _json.loads(text)
    nodes = [(None, None, tree)]
    out = []
    while nodes:
        parent, key, node = nodes.pop()
        out.append((parent, key))
        if isinstance(node, dict):
            nodes += [(node, k, v) for k, v in node.items()]
        elif isinstance(node, list) and len(node) < 50:
            nodes += [(node, i, v) for i, v in enumerate(node)]
    for _ in range(draw(st.integers(1, 3))):
        parent, key = draw(st.sampled_from(out[1:]))
        try:
            if draw(st.booleans()) and isinstance(parent, dict):
                del parent[key]
            else:
                parent[key] = draw(st.sampled_from([None, -1, 2**40, "x", [], {}, 0.5,
                                                    {"__tensor__": ["state", "nope"]},
                                                    {"__tuple__": 3}, {"__dict__": [[1]]}]))
        except (KeyError, IndexError):
            pass
    return _json.dumps(tree)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_checkpoint_with_valid_hashes_but_bad_content(checkpoint_dir, data):
    """Past the hash check, a malformed state still gives CheckpointError, never a traceback
    from deep inside torch, numpy or random (the manifest is rewritten to match the edits)."""
    import hashlib
    import json as _json
    import shutil
    from conftest import tiny_config
    from wganlab.train import Trainer
    from wganlab.train.checkpoint import MANIFEST, CheckpointError, load_checkpoint, restore
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "checkpoints" / "step_0000002"
        shutil.copytree(checkpoint_dir, path)
        target = data.draw(st.sampled_from(["state.json", "state.safetensors",
                                            "critic.safetensors"]))
        if target == "state.json":
            new = data.draw(json_mutation((path / target).read_text())).encode()
        else:
            new = data.draw(mutated(st.just((path / target).read_bytes())))
        (path / target).write_bytes(new)
        manifest = _json.loads((path / MANIFEST).read_text())
        manifest["files"][target] = {"bytes": len(new), "sha256": hashlib.sha256(new).hexdigest()}
        (path / MANIFEST).write_text(_json.dumps(manifest))
        try:
            ckpt = load_checkpoint(path)
            trainer = Trainer(tiny_config(**{"train.generator_steps": 2,
                                             "constraint.name": "gp"}), Path(d))
            restore(trainer, ckpt)
        except CheckpointError:
            pass


# ----------------------------------------------------------------------------- aliases, nesting

@st.composite
def aliased_yaml(draw):
    """A config whose values are built from YAML anchors and aliases of each other, nested and
    repeated as an attacker (or a copy-paste) might: small text, possibly a huge expansion."""
    lines, anchors = [], []
    for i in range(draw(st.integers(1, 10))):
        if anchors and draw(st.booleans()):
            near = st.sampled_from(anchors[-1:] * len(anchors) + anchors)  # mostly chains
            items = [f"*{draw(near)}" for _ in range(draw(st.integers(1, 12)))]
        else:
            items = [str(draw(st.integers(-3, 300))) for _ in range(draw(st.integers(0, 4)))]
        body = (f"[{', '.join(items)}]" if draw(st.booleans())
                else "{" + ", ".join(f"k{j}: {v}" for j, v in enumerate(items)) + "}")
        lines.append(f"x{i}: &a{i} {body}")
        anchors.append(f"a{i}")
    section = draw(st.sampled_from(["constraint:\n  variants", "train", "model", "data"]))
    lines.append(f"{section}: *{draw(st.sampled_from(anchors))}")
    return "\n".join(lines) + "\n"


CHAIN = "x0: &a0 [1, 2, 3, 4]\n" + "".join(
    f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 12)}]\n" for i in range(1, 10)) + "train: *a9\n"


@settings(max_examples=100, deadline=2000, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(aliased_yaml())
@example(CHAIN)  # the extreme the grammar allows: 4 * 12**9 values from 600 bytes
def test_load_config_yaml_with_aliases_is_bounded(text):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_text(text)
        try:
            assert isinstance(load_config(path), Config)
        except ConfigError:
            pass


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from(["MANIFEST.json", "state.json"]),
       depth=st.one_of(st.integers(1, 100), st.integers(900, 1100), st.just(300_000)),
       kinds=st.text(alphabet="[{", min_size=1, max_size=4))
def test_checkpoint_with_deeply_nested_json_is_invalid(checkpoint_dir, target, depth, kinds):
    """Nesting of any depth in a checkpoint's JSON (hashes made to match) gives CheckpointError,
    never a RecursionError."""
    import hashlib
    import json as _json
    import shutil
    from wganlab.train.checkpoint import MANIFEST, CheckpointError, load_checkpoint
    opening = "".join(kinds[i % len(kinds)] if kinds[i % len(kinds)] == "[" else '{"a":'
                      for i in range(depth))
    closing = "".join("]" if c == "[" else "}" for c in reversed(
        [kinds[i % len(kinds)] for i in range(depth)]))
    text = opening + "1" + closing
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "step_0000002"
        shutil.copytree(checkpoint_dir, path)
        if target == "state.json":  # inside the state, where the loader walks it
            body = _json.loads((path / target).read_text())
            raw = _json.dumps(body)[:-1] + ', "extra": ' + text + "}"
            (path / target).write_text(raw)
            manifest = _json.loads((path / MANIFEST).read_text())
            manifest["files"][target] = {"bytes": len(raw.encode()),
                                         "sha256": hashlib.sha256(raw.encode()).hexdigest()}
            (path / MANIFEST).write_text(_json.dumps(manifest))
        else:
            (path / target).write_text(text)
        try:
            load_checkpoint(path)
        except CheckpointError:
            pass
