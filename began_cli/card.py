"""`began eval --write-card`: a bundle's figures into its manifest ("eval") and its
MODEL_CARD.md (a marked section), written only into a bundle the user named, never
into the installed package, never through a link. Torch-free: the figures come from
train/evaluate.py.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

from .bundle import CARD, MANIFEST, load_bundle, write_manifest
from .errors import BeganError, UsageError
from .files import relation, write_text
from .reading import Unreadable, read_text_capped

CARD_BEGIN = "<!-- began eval: begin -->"
CARD_END = "<!-- began eval: end -->"


def fid_line(r: dict[str, Any]) -> str:
    """The headline, with both counts in it: FID falls as they grow."""
    ref = r["reference"]
    return (f"FID ({r['samples']:,} samples vs {ref['used']:,} images of "
            f"`{Path(ref['path']).name}`): {r['fid']:.1f}")


def card_section(r: dict[str, Any]) -> str:
    kid, ms = r["kid"], r["msssim"]
    ref = r["reference"]
    rows = [
        ("FID", f"{r['fid']:.2f}"),
        ("KID x 1000 (mean +- std)", f"{kid['mean'] * 1e3:.3f} +- {kid['std'] * 1e3:.3f}"),
        (f"precision (k = {r['k']})", f"{r['precision']:.3f}"),
        (f"recall (k = {r['k']})", f"{r['recall']:.3f}"),
        ("MS-SSIM among samples / among real images", f"{ms['samples']:.3f} / {ms['real']:.3f}"),
    ]
    if "ndb" in r:
        b = r["ndb"]
        rows += [(f"NDB / K (K = {b['bins']} k-means bins of the reference pixels)",
                  f"{b['ndb_k']:.3f} ({b['different']} bins differ)"),
                 ("JS divergence of the bin histograms (bits)", f"{b['js']:.4f}"),
                 ("bins the samples fill", f"{b['covered']} of {b['bins']}")]
    body = "\n".join(f"| {a} | {b} |" for a, b in rows)
    return (f"{CARD_BEGIN}\n## Evaluation (`began eval`)\n\n"
            f"{r['samples']} samples (seeds from {r.get('seed', 0)}) against {ref['used']} of the "
            f"{ref['images']} images in `{Path(ref['path']).name}`, decoded as in training; "
            f"TF-Inception pool3 features; KID over {kid['subsets']} subsets of "
            f"{kid['subset_size']}; MS-SSIM over {ms['pairs']} random pairs.\n\n"
            f"{fid_line(r)}\n\n"
            f"| figure | value |\n|---|---|\n{body}\n{CARD_END}\n")


MAX_CARD_BYTES = 4 << 20  # a model card is a page of text
COPY_HINT = ("copy the bundle to a folder of your own first (cp -r {src} my-model) and pass "
             "--model my-model --write-card")


def _package_dir() -> Path:
    import began

    return Path(began.__file__).resolve().parent


def check_card_target(root: Path | None) -> Path:
    """The bundle --write-card may write into, checked before any work: one the user
    named, not inside the installed package (the embedded model included), whose
    manifest.json and MODEL_CARD.md are not links (a link's target, maybe a private
    file outside the bundle, would be copied into a new card)."""
    from .model import DEFAULT_MODEL

    if root is None:
        raise UsageError("--write-card needs a model folder you name: without --model it "
                         "would write into the embedded model of the installed package",
                         COPY_HINT.format(src=DEFAULT_MODEL))
    for inside in (DEFAULT_MODEL, _package_dir()):
        if relation(root, inside) in ("is", "is inside"):
            raise UsageError(f"--write-card will not write into {root}: it is inside the "
                             f"installed began package ({os.path.realpath(root)})",
                             COPY_HINT.format(src=root))
    for name in (MANIFEST, CARD):
        path = root / name
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue  # a missing card is fine; a missing manifest is the loader's error
        except OSError as e:
            raise BeganError(f"cannot read {path} ({e.strerror})",
                             "check the model folder's permissions") from None
        if stat.S_ISLNK(mode):
            raise BeganError(f"{path} is a symbolic link, and --write-card never writes "
                             "through one", f"replace it with a copy of the file itself (cp "
                             f"--remove-destination {os.path.realpath(path)} {path}), or drop "
                             "--write-card")
        if not stat.S_ISREG(mode):
            raise BeganError(f"{path} is not a regular file, and --write-card only replaces "
                             "regular files", "move it out of the bundle, or drop --write-card")
    return root


def _read_card(card: Path) -> str | None:
    """The card's text, read without following a link, bounded; None when there is none."""
    if not os.path.lexists(card):
        return None
    try:
        return read_text_capped(card, MAX_CARD_BYTES, follow=False, what="a model card")
    except Unreadable as e:
        raise BeganError(f"{card} {e}", "move it out of the bundle or fix it, or drop "
                         "--write-card") from None


def write_card(bundle_root: Path, r: dict[str, Any]) -> list[Path]:
    """Put the figures into manifest.json (an "eval" key) and MODEL_CARD.md, if present.

    The manifest lists a sha256 for every other file but none for itself, so
    rewriting it keeps the bundle loadable; the graphs are not touched. Both are
    replaced atomically and never through a link (check_card_target, again here).
    """
    check_card_target(bundle_root)
    b = load_bundle(bundle_root)  # refuse to annotate a damaged bundle
    manifest = dict(b.manifest)
    manifest["eval"] = {k: v for k, v in r.items() if k != "seconds"}
    card = bundle_root / CARD
    written = [bundle_root / MANIFEST]
    try:
        text = _read_card(card)
        write_manifest(bundle_root, manifest)
        if text is not None:
            section = card_section(r)
            pattern = re.compile(re.escape(CARD_BEGIN) + r".*?" + re.escape(CARD_END)
                                 + r"\n?", re.S)
            if pattern.search(text):
                text = pattern.sub(lambda _: section, text)
            else:
                text = text.rstrip("\n") + "\n\n" + section
            write_text(card, text)
            written.append(card)
    except OSError as e:
        raise BeganError(f"cannot write the figures into {bundle_root} ({e.strerror or e})",
                         "make the model folder writable (or copy it somewhere writable), "
                         "or drop --write-card") from None
    load_bundle(bundle_root)  # and prove it still loads
    return written
