"""Convert a PyTorch state dict (.pth) into a safetensors file that lipctl reads.

Usage: python scripts/torch_state_dict.py IN.pth OUT.safetensors

Run by `lipctl import --from-pytorch` with the project's own `.venv` Python (torch installed by
`make build`). The file is opened with `torch.load(weights_only=True, map_location="cpu")`: the
restricted unpickler only rebuilds tensors and plain containers, so a pickle that asks to run code
(a `__reduce__` naming any callable) is refused, never executed.

Accepted content: a mapping from parameter name (str) to tensor, as `model.state_dict()` returns.
Tensors are written contiguous, in their own dtype, on the CPU, in sorted name order.

Exit status: 0 on success; 2 when the input is not such a state dict (unreadable or truncated file,
code-executing pickle, not a mapping, a non-tensor value, an unsupported dtype), with one line on
stderr naming the file (and the key, when one is at fault); nothing is written then.
"""

import ctypes
import json
import os
import struct
import sys

# safetensors dtype names of the dtypes a state dict holds.
DTYPES = {
    "torch.float32": "F32",
    "torch.float64": "F64",
    "torch.float16": "F16",
    "torch.bfloat16": "BF16",
    "torch.int64": "I64",
    "torch.int32": "I32",
    "torch.int16": "I16",
    "torch.int8": "I8",
    "torch.uint8": "U8",
    "torch.bool": "BOOL",
}


class UserError(Exception):
    pass


def tensor_bytes(t):
    """The raw little-endian bytes of a CPU tensor (no NumPy needed)."""
    t = t.detach().to("cpu").contiguous().clone()
    size = t.numel() * t.element_size()
    return ctypes.string_at(t.data_ptr(), size) if size else b""


def write_safetensors(path, tensors):
    """Writes {name: tensor} as a safetensors file (8-byte header length, JSON header, data)."""
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        dtype = DTYPES.get(str(t.dtype))
        if dtype is None:
            raise UserError(f"tensor {name!r} has dtype {t.dtype}, which lipctl does not read")
        data = tensor_bytes(t)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)
    os.replace(tmp, path)


def load_state_dict(path):
    import torch

    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise UserError("no such file")
    except Exception as e:  # truncated zip, not a pickle, a global the safe unpickler refuses
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"not a loadable PyTorch state dict (torch.load with weights_only=True: {first})")
    if not isinstance(obj, dict):
        raise UserError(f"holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)")
    for name, value in obj.items():
        if not isinstance(name, str):
            raise UserError(f"key {name!r} is not a string")
        if not isinstance(value, torch.Tensor):
            raise UserError(f"key {name!r} holds a {type(value).__name__}, not a tensor")
    return obj


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    src, dst = argv[1], argv[2]
    try:
        write_safetensors(dst, load_state_dict(src))
    except UserError as e:
        print(f"{src}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
