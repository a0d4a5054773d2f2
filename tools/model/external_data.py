"""Write an ONNX graph with its weights in one external file, each tensor at a 64 KiB-aligned offset.

    /usr/bin/python3 tools/model/external_data.py SRC.onnx [DST.onnx]     (DST defaults to SRC, rewritten in place)

onnxruntime maps an external data file into memory instead of copying it when a tensor's offset is aligned to the
allocation granularity (64 KiB covers every platform's); weights it then pre-packs for its GEMM kernels leave the
mapping's pages unused, and weights read in place (the embedding table a Gather reads row by row) are paged in as they
are touched. Measured at the SmolLM2-135M shape (bench:shapes' primitive graph, 652 MB of weights): RSS after
loading 1,089 MB with the weights inside the graph, 641 MB with them in an aligned external file. onnx 1.12's own
external-data writer packs tensors back to back (unaligned), which onnxruntime copies.

DST.onnx gets the graph (small), DST.onnx.data the weights; tensors under 1 KiB stay inline. SRC may itself keep its
weights outside (torch's per-tensor files for a graph past 2 GB): they are read through onnx's loader.
"""
from __future__ import annotations

import os
import sys

import onnx

ALIGN = 64 * 1024
INLINE_BELOW = 1024


def externalize(src: str, dst: str | None = None) -> int:
    """Rewrite src (or write dst) with aligned external weights; returns the data file's size."""
    dst = dst or src
    model = onnx.load(src, load_external_data=True)
    data_name = os.path.basename(dst) + ".data"
    data_path = os.path.join(os.path.dirname(os.path.abspath(dst)), data_name)
    tmp = data_path + ".tmp"
    off = 0
    with open(tmp, "wb") as f:
        for t in model.graph.initializer:
            if len(t.raw_data) < INLINE_BELOW:
                continue
            pad = (-off) % ALIGN
            f.write(b"\0" * pad)
            off += pad
            raw = t.raw_data
            f.write(raw)
            t.ClearField("raw_data")
            t.data_location = onnx.TensorProto.EXTERNAL
            del t.external_data[:]
            for k, v in (("location", data_name), ("offset", str(off)), ("length", str(len(raw)))):
                e = t.external_data.add()
                e.key, e.value = k, v
            off += len(raw)
    os.replace(tmp, data_path)
    onnx.save(model, dst)
    return off


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    n = externalize(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else None)
    print(f"external_data: {n} bytes of weights in {(sys.argv[2] if len(sys.argv) == 3 else sys.argv[1])}.data")
