"""A loaded model bundle with lazily created onnxruntime sessions.

    m = Model.open(None, device="auto")        # the embedded default model
    images = m.generate(z)                     # (B, 3, R, R) float32 in about [-1, 1]

Which model: --model DIR, else $BEGAN_MODEL, else the model shipped inside the
package. Inputs and outputs are float32 numpy arrays whatever the graph's
precision: fp16 graphs are used on CUDA when the bundle has them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .bundle import GRAPHS, REEXPORT, Bundle, BundleError, load_bundle, tensor_shape
from .errors import BeganError, UsageError
from .runtime import Provider, resolve, session

DEFAULT_MODEL = Path(__file__).resolve().parent / "default_model"


def model_dir(spec: str | Path | None) -> Path:
    if spec:
        return Path(spec)
    env = os.environ.get("BEGAN_MODEL")
    return Path(env) if env else DEFAULT_MODEL


def open_bundle(spec: str | Path | None, verify: bool = True) -> Bundle:
    """The bundle for --model / $BEGAN_MODEL / the embedded default: its manifest checked,
    every file present with the size it lists, and (verify) every file's sha256."""
    root = model_dir(spec)
    if root == DEFAULT_MODEL and not (root / "manifest.json").exists():
        raise BundleError("this installation has no embedded default model",
                          "pass --model DIR (a folder from `began export`)")
    return load_bundle(root, verify=verify)


class Model:
    def __init__(self, bundle: Bundle, provider: Provider, precision: str = "auto",
                 io_binding: bool | None = None):
        if precision not in ("auto", "fp32", "fp16"):
            raise UsageError(f"unknown precision {precision!r}", "use auto, fp32 or fp16")
        self.bundle = bundle
        self.provider = provider
        self.precision = precision
        # On CUDA, bound inputs/outputs spare onnxruntime a staging copy and a sync per call.
        self.io_binding = provider.kind == "cuda" if io_binding is None else io_binding
        self._sessions: dict[str, object] = {}
        self._probed: set[str] = set()

    @classmethod
    def open(cls, spec: str | Path | None, device: str = "auto", precision: str = "auto",
             graphs: tuple[str, ...] | None = None) -> "Model":
        """graphs=None: every file of the bundle is hashed now. graphs named: only those,
        as their sessions are made here, before any work (a session is always built from
        bytes hashed as they are read). `began sample` needs the generator alone, and
        hashing the other 45 MB of the embedded model would cost it ~50 ms a start."""
        m = cls(open_bundle(spec, verify=graphs is None), resolve(device), precision)
        for graph in graphs or ():
            m._session(graph)
        return m

    @property
    def resolution(self) -> int:
        return self.bundle.resolution

    @property
    def z_dim(self) -> int:
        return self.bundle.z_dim

    def graph_precision(self, graph: str) -> str:
        """fp16 on CUDA when the bundle has it (or when asked for); fp32 otherwise."""
        if self.precision == "fp16" or (self.precision == "auto" and self.provider.kind == "cuda"):
            if self.bundle.has(graph, "fp16"):
                return "fp16"
            if self.precision == "fp16":
                raise BundleError(f"the model has no fp16 {graph}",
                                  "use --precision fp32, or re-export without --no-fp16")
        return "fp32"

    def _session(self, graph: str):
        if graph not in self._sessions:
            try:
                s = self._new_session(graph)
            except BeganError as e:
                if not (self.provider.auto and self.provider.kind == "cuda"):
                    raise
                # --device auto: CUDA looked usable but this graph did not land there.
                self.provider = Provider("cpu", reason=f"CUDA not used: {e.message}", auto=True)
                self._sessions.clear()
                s = self._new_session(graph)
            self._check(graph, s)
            self._sessions[graph] = s
        return self._sessions[graph]

    def _new_session(self, graph: str):
        precision = self.graph_precision(graph)
        # onnxruntime gets the bytes that were just verified, never the path again.
        return session(self.bundle.path(graph, precision), self.provider,
                       self.bundle.read_graph(graph, precision))

    def expected_shapes(self, graph: str) -> tuple[list[list[int]], list[list[int]]]:
        """Per input and output, the shape after the batch axis that the manifest implies."""
        b, spec = self.bundle, GRAPHS[graph]
        return tuple([tensor_shape(t, b.resolution, b.z_dim, b.h_dim) for t in names]
                     for names in (spec.inputs, spec.outputs))

    def _check(self, graph: str, s) -> None:
        """The file must be the graph the manifest says: right role, inputs and outputs,
        and the shapes the manifest's resolution, N_z and N_h imply (a graph that would
        make 2048x2048 images from a 16x16 manifest is refused before it runs).
        (The sha256 proves the file is the one exported, not that the export was ours.)"""
        name = self.bundle.path(graph, self.graph_precision(graph)).name
        meta = s.get_modelmeta().custom_metadata_map
        io = self.bundle.manifest.get("graphs", {}).get(graph, {})
        names = ([i.name for i in s.get_inputs()], [o.name for o in s.get_outputs()])
        if meta.get("began.graph") != graph or names != (io.get("inputs"), io.get("outputs")):
            raise BundleError(f"{name} in {self.bundle.root} is not a began {graph} graph",
                              REEXPORT)
        dtype = "tensor(float16)" if self.graph_precision(graph) == "fp16" else "tensor(float)"
        for args, want in zip((s.get_inputs(), s.get_outputs()), self.expected_shapes(graph)):
            for arg, shape in zip(args, want):
                got = list(arg.shape)
                if (arg.type != dtype or len(got) != 1 + len(shape)
                        or isinstance(got[0], int) or got[1:] != shape):
                    raise BundleError(
                        f"{name} in {self.bundle.root} declares {arg.name} as {arg.type} "
                        f"{_shape(got)}, but its manifest implies {dtype} "
                        f"{_shape(['batch', *shape])}", REEXPORT)

    def run(self, graph: str, *inputs: np.ndarray) -> list[np.ndarray]:
        """One call of a graph on a batch; float32 in, float32 out. The first call of each
        graph runs one row first, and every result's shape is checked, so a graph that
        computes more than it declares is stopped at one image."""
        s = self._session(graph)
        if graph not in self._probed:
            if len(inputs[0]) > 1:
                self._run_checked(graph, s, *(x[:1] for x in inputs))
            self._probed.add(graph)
        return self._run_checked(graph, s, *inputs)

    def _run_checked(self, graph: str, s, *inputs: np.ndarray) -> list[np.ndarray]:
        outs = self._run(graph, s, *inputs)
        n = len(inputs[0])
        for o, arg, shape in zip(outs, s.get_outputs(), self.expected_shapes(graph)[1]):
            if o.shape != (n, *shape):
                raise BundleError(f"{graph} in {self.bundle.root} returned {arg.name} of shape "
                                  f"{_shape(list(o.shape))}, not {_shape([n, *shape])}",
                                  REEXPORT)
        return outs

    def _run(self, graph: str, s, *inputs: np.ndarray) -> list[np.ndarray]:
        dtype = np.float16 if self.graph_precision(graph) == "fp16" else np.float32
        feed = {i.name: np.ascontiguousarray(x, dtype=dtype)
                for i, x in zip(s.get_inputs(), inputs)}
        if not self.io_binding:
            return [np.asarray(o, dtype=np.float32) for o in s.run(None, feed)]
        binding = s.io_binding()
        for name, x in feed.items():
            binding.bind_cpu_input(name, x)
        for o in s.get_outputs():
            binding.bind_output(o.name, self.provider.kind, self.provider.device_id)
        s.run_with_iobinding(binding)
        return [np.asarray(o, dtype=np.float32) for o in binding.copy_outputs_to_cpu()]

    def batches(self, graph: str, *inputs: np.ndarray, batch_size: int = 256
                ) -> Iterator[list[np.ndarray]]:
        n = len(inputs[0])
        for i in range(0, n, batch_size):
            yield self.run(graph, *(x[i:i + batch_size] for x in inputs))

    def _all(self, graph: str, *inputs: np.ndarray, batch_size: int) -> list[np.ndarray]:
        parts = list(self.batches(graph, *inputs, batch_size=batch_size))
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]

    def generate(self, z: np.ndarray, batch_size: int = 256) -> np.ndarray:
        return self._all("generator", z, batch_size=batch_size)[0]

    def encode(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        return self._all("encoder", images, batch_size=batch_size)[0]

    def autoencode(self, images: np.ndarray, batch_size: int = 256
                   ) -> tuple[np.ndarray, np.ndarray]:
        recon, h = self._all("autoencoder", images, batch_size=batch_size)
        return recon, h

    def decode(self, h: np.ndarray, batch_size: int = 256) -> np.ndarray:
        return self._all("decoder", h, batch_size=batch_size)[0]


def _shape(dims: list) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ")"
