"""Hardening (issue 11): nothing a user types deletes their files, stalls the server or gives a wrong exact
answer. Each test here failed before its fix."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pgraft.cli import main

FAST = ["--samples", "128", "--preview", "16", "--num-inference-steps", "10", "--finetune-steps", "5", "--quiet"]


def _run(*args: str) -> int:
    return main(["run", *args, *FAST])


# --- data loss ----------------------------------------------------------------------------------------------
def test_overwrite_deletes_only_what_pgraft_wrote(tmp_path, capsys):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "important.txt").write_text("keep me")
    (project / "config.yaml").write_text("mine: true\n")
    (project / "src" / "code.py").write_text("print(1)")
    assert _run("--rounds", "1", "--out", str(project), "--overwrite") == 2  # not a marked run folder
    assert "nothing was deleted" in capsys.readouterr().err
    assert (project / "important.txt").read_text() == "keep me" and (project / "src" / "code.py").exists()

    run = tmp_path / "run"
    assert _run("--rounds", "1", "--out", str(run)) == 0
    (run / "notes.txt").write_text("my notes")
    (run / "extra").mkdir()
    assert _run("--rounds", "1", "--out", str(run), "--overwrite") == 0
    assert (run / "notes.txt").read_text() == "my notes" and (run / "extra").is_dir()
    assert list(pd.read_csv(run / "metrics.csv")["round"]) == [0, 1]


@pytest.mark.parametrize("out", ["", ".", "~", "/"])
def test_out_that_is_surely_a_mistake_is_refused(tmp_path, monkeypatch, capsys, out):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "thesis.txt").write_text("years of work")
    for mode in ([], ["--overwrite"], ["--resume"]):
        assert _run("--rounds", "1", "--out", out, *mode) == 2
        assert "--out" in capsys.readouterr().err
    assert (tmp_path / "data" / "thesis.txt").read_text() == "years of work"
    assert not (tmp_path / "rounds").exists()


def test_out_that_is_a_file_or_unwritable_is_one_line(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert _run("--rounds", "1", "--out", str(afile)) == 2
    assert "--out" in capsys.readouterr().err and afile.read_text() == "x"
    assert _run("--rounds", "1", "--out", str(afile / "run")) == 2  # a folder cannot be made inside a file
    assert "--out: cannot write" in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores the mode
            pytest.skip("running as root: a read-only folder is still writable")
        assert _run("--rounds", "1", "--out", str(locked / "run")) == 2
        assert "--out: cannot write" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def test_resume_refuses_a_non_run_folder_and_shrinking(tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "file.txt").write_text("x")
    assert _run("--rounds", "1", "--out", str(other), "--resume") == 2
    assert "holds no pgraft run" in capsys.readouterr().err
    run = tmp_path / "run"
    assert _run("--rounds", "3", "--out", str(run)) == 0
    assert _run("--rounds", "2", "--out", str(run), "--resume") == 2
    assert "cannot shrink" in capsys.readouterr().err
    assert yaml.safe_load((run / "config.yaml").read_text())["rounds"] == 3  # config.yaml left as it was


def test_resume_rebuilds_the_table_a_crash_left_behind(tmp_path):
    run = tmp_path / "run"
    assert _run("--rounds", "2", "--out", str(run)) == 0
    table = pd.read_csv(run / "metrics.csv")
    table[table["round"] < 2].to_csv(run / "metrics.csv", index=False)  # killed after the rename of round 2
    assert _run("--rounds", "2", "--out", str(run), "--resume") == 0
    assert list(pd.read_csv(run / "metrics.csv")["round"]) == [0, 1, 2]


def test_a_module_in_the_working_folder_never_shadows_an_installed_one(tmp_path):
    import shutil
    import subprocess
    import sys

    script = shutil.which("pgraft") or str(Path(sys.executable).parent / "pgraft")
    (tmp_path / "yaml.py").write_text("open('shadowed', 'w').write('yes')\nraise SystemExit('shadowed yaml')\n")
    (tmp_path / "myreward.py").write_text("def right(x):\n    return x[:, 0]\n")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run([script, "models"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "toy2d" in done.stdout, done.stderr
    assert not (tmp_path / "shadowed").exists()
    # a user reward from the working folder is still found, when asked for
    args = [script, "run", "--reward", "myreward:right", "--rounds", "1", "--out", "run", *FAST]
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "shadowed").exists()
