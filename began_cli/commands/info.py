"""`began info`: what a model is, its files, and which provider would run it and why."""

from __future__ import annotations

from ..errors import BeganError
from ..model import open_bundle
from ..output import Out
from ..runtime import cuda_status, resolve
from .common import DeviceOpt, JsonOpt, ModelOpt, QuietOpt


def info(model: ModelOpt = None, device: DeviceOpt = "auto", as_json: JsonOpt = False,
         quiet: QuietOpt = False) -> None:
    """Show the model's manifest, its files, and the onnxruntime provider that would run."""
    import onnxruntime as ort

    o = Out(as_json, quiet)
    b = open_bundle(model)
    ok, cuda_reason, missing = cuda_status()
    try:
        provider = resolve(device)
        name, why = provider.name, provider.reason
    except BeganError as e:  # info reports; it does not fail on --device cuda
        name, why = "none", e.message
    m = b.manifest
    report = {
        "model": str(b.root),
        "format_version": m["format_version"],
        "began_version": m.get("began_version"),
        "resolution": b.resolution, "z_dim": b.z_dim, "h_dim": b.h_dim,
        "architecture": m["model"],
        "training": m.get("training", {}),
        "encoder": m.get("encoder", {}),
        "files": {name: {"bytes": f["bytes"], "precision": f.get("precision", "fp32"),
                         "sha256": f["sha256"]} for name, f in m["files"].items()},
        "files_verified": True,
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
        "provider": name, "provider_reason": why,
        "cuda": {"usable": ok, "reason": cuda_reason, "missing_libraries": list(missing)},
    }
    o.record(report)  # --json: data on stdout
    if not as_json:
        o.say(_text(report))  # the human report goes where all human text goes: stderr


def _text(r: dict) -> str:
    t, e = r["training"], r["encoder"]
    data = t.get("data", {})
    lines = [
        f"model      {r['model']}  (format {r['format_version']}, began {r['began_version']})",
        f"shape      {r['resolution']}x{r['resolution']} "
        f"{'grey (as RGB)' if r['architecture'].get('grey') else 'RGB'}, N_z {r['z_dim']}, "
        f"N_h {r['h_dim']}, n {r['architecture']['n']}"
        + (", skip" if r["architecture"].get("skip") else ""),
        f"training   step {t.get('step')}, gamma {t.get('gamma')}, k_t {_f(t.get('k'))}, "
        f"M_global {_f(t.get('m_global'))}",
        f"data       {data.get('images')} images from '{data.get('folder')}' "
        f"({data.get('crop')}, background {data.get('background')})",
        f"encoder    {e.get('kind')}: |Enc(G(z)) - z| {_f(e.get('metrics', {}).get('z_l1'))}, "
        f"PSNR G(Enc(x)) {_f(e.get('metrics', {}).get('psnr_real'), 2)} dB",
        "files      (sha256 verified)",
    ]
    lines += [f"  {name:<24} {f['bytes'] / 1e6:7.2f} MB  {f['precision']}"
              for name, f in r["files"].items()]
    lines += [f"runtime    onnxruntime {r['onnxruntime']}; providers "
              f"{', '.join(r['available_providers'])}",
              f"provider   {r['provider']}: {r['provider_reason']}"]
    if r["cuda"]["missing_libraries"]:
        lines.append(f"cuda       missing: {', '.join(r['cuda']['missing_libraries'])} "
                     "(install the cuda extra: pip install 'began[cuda]')")
    return "\n".join(lines)


def _f(v, digits: int = 4) -> str:
    return "-" if not isinstance(v, (int, float)) else f"{v:.{digits}f}"
