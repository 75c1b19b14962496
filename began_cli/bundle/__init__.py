"""The bundle contract: the folder `began export` writes and everything else reads.

    MODEL_DIR/
      manifest.json            what the model is, and a sha256 for every file below
      MODEL_CARD.md            optional: what it was trained on and how it scores
      <graph>.onnx             one per entry of GRAPHS below
      <graph>.fp16.onnx        half-precision variants for the GPU (fp16 in and out)

This module owns it: the graph names with their inputs and outputs (GRAPHS), the
manifest's fields with their types and bounds (`manifest_problem`), the format
version, how a manifest is written (`manifest_head`, `file_entry`, `write_manifest`)
and how a bundle is read and checked (`load_bundle`, `peek_manifest`). Adding a
graph or a manifest field is one edit here, plus the code that builds the graph
(export/graphs.py). Torch-free.

Images are NCHW RGB floats in [-1, 1]; pixels = clip(round((x + 1) * 127.5), 0, 255).

A bundle is untrusted input. Loading checks, before anything large is read:
every file is a regular file inside the folder (no FIFO, device, or symlink out),
of the size the manifest declares and under fixed bounds; every manifest field
the CLI uses has the right type and a sane range. Then every file's sha256 is
verified, and graphs are later handed to onnxruntime as the very bytes that
were verified (model.py also checks their declared shapes). `began sample`
hashes only the generator, the one file it reads (Model.open's `graphs`).
"""

from .folder import (Bundle, file_entry, load_bundle, manifest_head, open_regular,
                     peek_manifest, write_manifest)
from .spec import (CARD, FIELDS, FORMAT, FORMAT_VERSION, GRAPHS, MANIFEST, MAX_DIM, MAX_FILE_BYTES,
                   MAX_FILES, MAX_FILTERS, MAX_MANIFEST_BYTES, MAX_REPEAT, MAX_RESOLUTION,
                   MAX_TOTAL_BYTES, PRECISIONS, REEXPORT, BundleError, Graph, graph_file,
                   manifest_problem, tensor_shape)
from began.reading import sha256_file

__all__ = ["Bundle", "BundleError", "CARD", "FIELDS", "FORMAT", "FORMAT_VERSION", "GRAPHS",
           "Graph", "MANIFEST", "MAX_DIM", "MAX_FILE_BYTES", "MAX_FILES", "MAX_FILTERS",
           "MAX_MANIFEST_BYTES", "MAX_REPEAT", "MAX_RESOLUTION", "MAX_TOTAL_BYTES",
           "PRECISIONS", "REEXPORT", "file_entry", "graph_file", "load_bundle",
           "manifest_head", "manifest_problem", "open_regular", "peek_manifest",
           "sha256_file", "tensor_shape", "write_manifest"]
