#!/usr/bin/env python3
"""Writes the small seed files of fuzz/seeds/pth/ (stdlib only, deterministic): torch.save-format
zips made without torch, by pickling stand-ins registered under torch's module names.
The safetensors, YAML and manifest seeds come from `cargo test -- --ignored write_seed_corpus`."""
import collections, io, os, pickle, struct, sys, types, zipfile

torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")
sys.modules["torch"], sys.modules["torch._utils"] = torch, utils


def _rebuild_tensor_v2(*args):
    raise NotImplementedError


_rebuild_tensor_v2.__module__ = "torch._utils"
utils._rebuild_tensor_v2 = _rebuild_tensor_v2
for name in ["FloatStorage", "HalfStorage", "BFloat16Storage", "LongStorage"]:
    cls = type(name, (), {"__module__": "torch"})
    setattr(torch, name, cls)


class Storage:
    def __init__(self, key, cls, data):
        self.key, self.cls, self.data = key, cls, data


class Tensor:
    def __init__(self, storage, offset, shape):
        self.storage, self.offset, self.shape = storage, offset, shape

    def __reduce__(self):
        stride, step = [], 1
        for dim in reversed(self.shape):
            stride.insert(0, step)
            step *= dim
        return (_rebuild_tensor_v2, (self.storage, self.offset, tuple(self.shape), tuple(stride), False, collections.OrderedDict()))


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", obj.cls, obj.key, "cpu", len(obj.data))
        return None


def entry(name):
    return zipfile.ZipInfo(name, date_time=(2025, 1, 1, 0, 0, 0))


def save(path, state):
    storages = {}

    def walk(value):
        if isinstance(value, Tensor):
            storages[value.storage.key] = value.storage
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(state)
    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(state)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(entry("archive/data.pkl"), buffer.getvalue())
        for key, storage in sorted(storages.items()):
            archive.writestr(entry(f"archive/data/{key}"), storage.data)
        archive.writestr(entry("archive/version"), "3\n")


here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "pth")
os.makedirs(here, exist_ok=True)
floats = Storage("0", torch.FloatStorage, struct.pack("<6f", 1, 2, 3, 4, 5, 6))
halves = Storage("1", torch.HalfStorage, struct.pack("<3e", 0.5, 1.5, -2.0))
bf16 = Storage("2", torch.BFloat16Storage, bytes([0x80, 0x3F, 0x00, 0x40]))
state = collections.OrderedDict()
state["encoder.weight"] = Tensor(floats, 0, [2, 3])
state["encoder.bias"] = Tensor(halves, 0, [3])
state["decoder"] = {"scale": Tensor(bf16, 1, [1]), "view": Tensor(floats, 2, [2, 2])}
save(os.path.join(here, "tiny_state_dict.pth"), state)
save(os.path.join(here, "one_tensor.pth"), {"w": Tensor(Storage("0", torch.FloatStorage, struct.pack("<f", 1.0)), 0, [1])})

# Regressions found by hand-written inputs the fuzzer had not reached (each panicked or ran out of
# memory before the fix); the property tests replay every seed.
def write_pickle(path, program):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(entry("archive/data.pkl"), program)


write_pickle(os.path.join(here, "regression_huge_text_length.pth"), b"\x80\x02\x8d" + struct.pack("<Q", 2**64 - 1) + b"abc.")
write_pickle(os.path.join(here, "regression_memo_bomb.pth"), b"\x80\x02]q\x00" + b"(h\x00h\x00lq\x00" * 40 + b".")
write_pickle(os.path.join(here, "regression_deep_nesting.pth"), b"\x80\x02" + b"]" * 20000 + b"a" * 19999 + b".")
huge = Storage("0", torch.FloatStorage, struct.pack("<f", 1.0))
save(os.path.join(here, "regression_overflowing_shape.pth"), {"w": Tensor(huge, 0, [1 << 40, 1 << 40])})
save(os.path.join(here, "regression_negative_offset.pth"), {"w": Tensor(huge, -(1 << 62), [1])})
