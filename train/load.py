"""Decode the training folder (through the cache) and report what was loaded."""

from __future__ import annotations

from typing import Callable

from began.errors import BeganError

from .config import TrainConfig
from .data import ImageSet, NoImagesError, load_image_folder
from .distributed import Dist
from .rank0 import on_main
from .run_folder import RunFolder
from .runs import preprocess_of


def load_data(cfg: TrainConfig, run: RunFolder, progress: bool | None,
              log: Callable[[str], None], d: Dist) -> ImageSet:
    """Decode the folder into the cache (rank 0 first, the other ranks then read it)."""
    pre = preprocess_of(cfg)

    def load() -> ImageSet:
        try:
            return load_image_folder(cfg.data_dir, pre, workers=cfg.workers or None,
                                     progress=progress if d.is_main else False)
        except NoImagesError as e:
            raise BeganError(str(e), "point DATA_DIR at a folder with png, jpg, webp, bmp or "
                                     "gif images (searched recursively)") from None
        except (FileNotFoundError, NotADirectoryError) as e:
            raise BeganError(str(e), "DATA_DIR must be a folder of images") from None

    if d.active:  # rank 0 builds the cache; then every rank reads it
        def build_cache() -> None:
            load()

        on_main(d, build_cache)
    data = load()
    run.write_data_report(data.report())
    log(f"data: {len(data.files)} images at {pre.resolution}x{pre.resolution} from "
        f"{cfg.data_dir}" + (" (cached)" if data.from_cache else ""))
    if data.skipped:
        shown = "; ".join(f"{s.path}: {s.reason}" for s in data.skipped[:5])
        more = f" and {len(data.skipped) - 5} more" if len(data.skipped) > 5 else ""
        log(f"skipped {len(data.skipped)} files ({shown}{more}); all listed in "
            f"{run.path / 'data.json'}")
    return data
