"""began: train a BEGAN on your images, export it to ONNX, sample from the command line.

This package (`began_cli/` in the source tree) is the torch-free side. The
training side lives in `began.models`, `began.train` and `began.export`, which
need the `train` extra (torch). Imports go one way (tests/test_layers.py):

    core: the torch-free modules here (files, reading, errors, decode, images,
          bundle: the bundle contract, model + runtime: onnxruntime sessions, card)
      <- began.models <- began.train <- began.export
      <- the CLI and Python API (app.py, commands/, api.py)

export/ and `began eval` read a training run only through began.train.runs.
"""

__version__ = "0.1.0"


def load(path=None, device: str = "auto", precision: str = "auto"):
    """Open a model bundle for the Python API (began.api); the embedded model by default.
    onnxruntime is imported here, not by `import began`."""
    from .api import load as _load

    return _load(path, device=device, precision=precision)
