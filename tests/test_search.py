"""bench/quality/search.py: the tool that judges training settings by rates over seeds. Its
resume (finished runs are skipped) and its rates are what the quality log's tables rest on."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import draw_images

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "quality" / "search.py"


def _search():
    spec = importlib.util.spec_from_file_location("quality_search", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write(results: Path, rows: list[dict]) -> None:
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_pending_leaves_out_the_runs_that_have_a_result_line(tmp_path):
    grid = {"base": ["--preset", "small32"], "seeds": [0, 1],
            "settings": {"a": [], "b": ["--gamma", "0.5"]}}
    results = tmp_path / "results.jsonl"
    search = _search()
    assert [name for name, _ in search.pending(grid, results)] == ["a-s0", "a-s1", "b-s0", "b-s1"]
    _write(results, [{"run": "a-s1", "flags": [], "scores": {}}])
    todo = dict(search.pending(grid, results))
    assert list(todo) == ["a-s0", "b-s0", "b-s1"]
    assert todo["b-s1"] == ["--preset", "small32", "--gamma", "0.5", "--seed", "1"]


def test_summary_gives_rates_at_the_steps_every_seed_has(tmp_path, capsys):
    def at(covered, kl, cfid):
        return {"covered": covered, "kl": kl, "cfid": cfid}

    results = tmp_path / "results.jsonl"
    _write(results, [
        # seed 0 was interrupted at 1,018 and resumed: that checkpoint is no step of the rate
        {"run": "g-s0", "flags": ["--gamma", "0.5", "--seed", "0"],
         "scores": {"1000": at(7, 0.30, 300.0), "1018": at(8, 0.2, 290.0),
                    "2000": at(10, 0.03, 150.0)}},
        {"run": "g-s1", "flags": ["--gamma", "0.5", "--seed", "1"],
         "scores": {"1000": at(6, 0.50, 320.0), "2000": at(9, 0.05, 170.0)}},
        {"run": "g-s2", "flags": ["--gamma", "0.5", "--seed", "2"],
         "scores": {"1000": at(8, 0.20, 280.0), "2000": at(10, 0.02, 140.0)}},
    ])
    inc = [{"step": 2000, "fid": f, "kid": 0.03, "precision": 0.4, "recall": 0.1}
           for f in (70.0, 64.0, 66.5)]
    _write(results, [{**r, "inception": i} for r, i in zip(search_rows(results), inc)])
    _search().summary(results)
    out = capsys.readouterr().out
    assert "g (3 seeds; flags --gamma 0.5)" in out
    assert ("step   1000: 10/10 classes in 0 of 3; classes [7, 6, 8]; median KL 0.300; "
            "median cFID 300.00") in out
    assert ("step   2000: 10/10 classes in 2 of 3; classes [10, 9, 10]; median KL 0.030; "
            "median cFID 150.00") in out
    assert "1018" not in out
    assert ("Inception FID per seed [70.0, 64.0, 66.5] at steps [2000, 2000, 2000]; "
            "median 66.50") in out


def search_rows(results: Path) -> list[dict]:
    return _search().rows(results)


def test_a_search_trains_scores_every_checkpoint_and_a_rerun_trains_nothing(tmp_path):
    data, out = tmp_path / "images", tmp_path / "search"
    draw_images(data, 64)  # the NDB bins are 50 k-means clusters of the real images
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"base": ["--preset", "smoke", "--steps", "20"], "seeds": [0],
                                "settings": {"smoke": []}}))
    cmd = [sys.executable, str(SCRIPT), str(grid), "--data", str(data), "--out", str(out),
           "--every", "10", "-n", "64", "--fid", str(data)]
    env = {**os.environ, "BEGAN_CACHE_DIR": str(tmp_path / "cache")}
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stderr
    rows = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]
    assert [r["run"] for r in rows] == ["smoke-s0"]
    assert rows[0]["flags"] == ["--preset", "smoke", "--steps", "20", "--seed", "0"]
    scores = rows[0]["scores"]
    assert sorted(scores, key=int) == ["10", "20"]
    for s in scores.values():
        assert s["bins"] == 50 and 1 <= s["filled"] <= 50 and 0 <= s["ndb"] <= 50
        assert 0.0 <= s["js"] <= 1.0
    inc = rows[0]["inception"]  # the last checkpoint against the data folder
    assert inc["step"] == 20 and 0 < inc["fid"] < 1000 and 0 <= inc["precision"] <= 1
    log = (out / "smoke-s0.log").read_text()
    assert "done: step 20" in log

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr
    assert (out / "results.jsonl").read_text().count("\n") == 1
    assert (out / "smoke-s0.log").read_text() == log  # began train was not called again
