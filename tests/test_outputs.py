"""Where a run writes and how (issue 16, items 1 and 6).

* Nothing outside ``results/{run}/`` is written by a run, nothing outside ``results/{run}/new/{name}/``
  by apply_new: folder names are checked (schema and settings), every output is resolved and checked
  before a step runs (genovae.runner.prepare_outputs), and the privacy key and id map are resolved
  before the "not inside results/" check.
* The atomic writer removes the temporary files a killed writer left, and writes with the user's
  umask (not mkstemp's 0600); the id map stays 0600.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import REPO, TINY_CONFIG, run_snakemake, write_config

sys.path.insert(0, str(REPO / "workflow" / "lib"))

from genovae import io, pseudonym, runner  # noqa: E402
from genovae.errors import ConfigError, InputError  # noqa: E402
from genovae.settings import is_folder_name, load_settings, output_root  # noqa: E402

SIM = {"data": {"source": "simulate"}}
BAD_NAMES = ["..", ".", ".hidden", "a/b", "../x", "a\\b", "", "a/../b"]


@pytest.fixture
def umask():
    """Set a umask for one test and restore the old one."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------ item 1: names and paths
@pytest.mark.parametrize("name", BAD_NAMES)
def test_run_and_new_data_names_must_be_plain_folder_names(name):
    for cfg, key in (({**SIM, "run": name}, "run"), ({**SIM, "new_data": {"name": name}}, "new_data.name")):
        with pytest.raises(ConfigError) as err:
            load_settings(cfg)
        assert err.value.key == key
        assert str(err.value).startswith(f"config error: '{key}': ")
    assert not is_folder_name(name)  # the settings' own check, behind the schema's pattern


def test_good_folder_names_pass():
    for name in ("demo", "run_2", "cohort-1.v2", "A.b"):
        assert is_folder_name(name)
        s = load_settings({**SIM, "run": name, "new_data": {"name": name}})
        assert s.results == f"results/{name}"
    assert output_root({"run": "demo", "new_data": {"name": "b2"}}, "apply_new") == Path("results/demo/new/b2")
    assert output_root({"run": "demo", "new_data": {"name": "b2"}}, "train") == Path("results/demo")


def test_key_and_map_files_are_resolved_before_the_results_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "demo").mkdir(parents=True)
    (tmp_path / "private").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "results" / "demo")
    for path in (
        "results/demo/ids.tsv",
        "private/../results/demo/ids.tsv",  # lexically under private/
        str(tmp_path / "results" / "ids.tsv"),  # absolute
        "link/ids.tsv",  # a symbolic link into results/
        "./results",
    ):
        with pytest.raises(ConfigError, match="results/"):
            pseudonym.check_outside_results(path, "privacy.map_file")
    pseudonym.check_outside_results("private/ids.tsv", "privacy.map_file")
    pseudonym.check_outside_results("results_private/ids.tsv", "privacy.map_file")
    # through the settings, for both keys
    (tmp_path / "private" / "key").write_text("k" * 32)
    (tmp_path / "results" / "demo" / "key").write_text("k" * 32)
    cfg = {**SIM, "privacy": {"pseudonymize": True, "key_file": "private/key", "map_file": "link/ids.tsv"}}
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert err.value.key == "privacy.map_file"
    cfg["privacy"].update(key_file="link/key", map_file="private/ids.tsv")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert err.value.key == "privacy.key_file"


def test_check_inside_follows_dot_dot_and_links(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "results" / "demo"
    run.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (run / "new").symlink_to(tmp_path / "elsewhere")
    assert io.check_inside("results/demo/data/x.tsv", "results/demo") == run / "data" / "x.tsv"
    for bad in ("results/demo/../../data/samples.tsv", "results/demo/new/b2/latent.tsv", "results/other/x"):
        with pytest.raises(InputError, match="outside results/demo"):
            io.check_inside(bad, "results/demo")
    # a run folder that is itself a link (e.g. to scratch space) is fine
    (tmp_path / "scratch").mkdir()
    (tmp_path / "results" / "big").symlink_to(tmp_path / "scratch")
    io.check_inside("results/big/data/x.tsv", "results/big")


def fake_job(rule, outputs, config, log=()):
    return SimpleNamespace(rule=rule, output=list(outputs), log=list(log), config=config)


def test_runner_refuses_outputs_outside_the_run_and_removes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    user_file = tmp_path / "data" / "samples.tsv"
    user_file.write_text("sample_id\tgroup\nA\tx\n")
    config = {"run": "demo", "new_data": {"name": "b2"}, "privacy": {"map_file": "private/ids.tsv"}}
    called = []
    job = fake_job("collect", ["results/demo/../../data/samples.tsv"], config)
    with pytest.raises(SystemExit):
        runner.run_rule(job, lambda sm, log: called.append(1))
    assert not called and user_file.read_text() == "sample_id\tgroup\nA\tx\n"
    # apply_new may write below results/{run}/new/{name}/ only: not the training run's latent.tsv
    job = fake_job("apply_new", ["results/demo/new/b2/../../latent.tsv"], config)
    with pytest.raises(SystemExit):
        runner.run_rule(job, lambda sm, log: called.append(1))
    assert not called
    # the id map is the one output outside results/ (written where the user says)
    job = fake_job("collect", ["private/ids.tsv", "results/demo/data/samples.tsv"], config)
    runner.run_rule(job, lambda sm, log: called.append(1))
    assert called == [1]


@pytest.mark.workflow
def test_workflow_refuses_dot_dot_names_and_writes_nothing(tiny):
    data = tiny / "data"
    data.mkdir()
    (data / "samples.tsv").write_text("keep me\n")
    before = sorted(str(p.relative_to(tiny)) for p in tiny.rglob("*"))
    for args, key in ((("--config", "run=.."), "run"), (("--config", "new_data={name: ..}"), "new_data.name")):
        proc = run_snakemake(tiny, *args, check=False)
        assert proc.returncode != 0
        assert f"config error: '{key}'" in proc.stdout + proc.stderr
    assert (data / "samples.tsv").read_text() == "keep me\n"
    after = sorted(str(p.relative_to(tiny)) for p in tiny.rglob("*") if ".snakemake" not in p.parts)
    assert after == [p for p in before if ".snakemake" not in p]


# ------------------------------------------------------------------ item 6: stale temporary files, modes
def test_atomic_writer_removes_stale_temporary_files(tmp_path):
    target = tmp_path / "train_checkpoint.pt"
    stale = [
        tmp_path / ".train_checkpoint.pt.k2j4h5g6.tmp",  # an older genovae's name (no process named)
        tmp_path / f".train_checkpoint.pt.{io.tmp_owner().rsplit('-', 1)[0]}-{dead_pid()}.ab12cd34.tmp",
        tmp_path / ".train_checkpoint.pt.4242.tmp",  # the id map writer's older name
    ]
    alive = [
        tmp_path / f".train_checkpoint.pt.{io.tmp_owner()}.zz99yy88.tmp",  # this (running) process's
        tmp_path / ".train_checkpoint.pt.otherhost-1.zz99yy88.tmp",  # another host's, recent
        tmp_path / ".train_checkpoint.pt.gz.k2j4h5g6.tmp",  # the temporary file of another name
    ]
    for p in stale + alive:
        p.write_bytes(b"partial")
    io.write_text(target, "weights")
    assert target.read_text() == "weights"
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in alive)
    old = tmp_path / ".train_checkpoint.pt.otherhost-1.zz99yy88.tmp"
    os.utime(old, (0, 0))  # untouched for more than a day
    assert io.remove_stale_tmp(target) == [old]


def test_runner_removes_stale_temporary_files_of_its_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results" / "demo" / "rounds" / "1"
    out.mkdir(parents=True)
    host = io.tmp_owner().rsplit("-", 1)[0]
    stale = [out / ".model.pt.k2j4h5g6.tmp", out / f".train_checkpoint.pt.{host}-{dead_pid()}.ab12cd34.tmp"]
    live = out / f".train_checkpoint.pt.{io.tmp_owner()}.ab12cd34.tmp"
    for p in stale + [live]:
        p.write_bytes(b"partial")
    job = fake_job("train", ["results/demo/rounds/1/model.pt"], {"run": "demo", "new_data": {"name": "new"}})
    runner.run_rule(job, lambda sm, log: None)
    assert not any(p.exists() for p in stale) and live.exists()


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_results_get_the_umask_mode(tmp_path, umask, mask, mode):
    import pandas as pd

    umask(mask)
    io.write_text(tmp_path / "a.txt", "x")
    io.write_tsv(tmp_path / "b.tsv", pd.DataFrame({"a": [1]}))
    io.write_json(tmp_path / "c.json", {"a": 1})
    for name in ("a.txt", "b.tsv", "c.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    with io.atomic_path(tmp_path / "d.bin", mode=0o600) as tmp:  # a caller may ask for less
        Path(tmp).write_bytes(b"x")
    assert stat.S_IMODE((tmp_path / "d.bin").stat().st_mode) == 0o600
    # the id map stays 0600 whatever the umask (privacy.map_file)
    pseudonym.write_map(tmp_path / "ids.tsv", {"PT01": "s_1"})
    assert stat.S_IMODE((tmp_path / "ids.tsv").stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.workflow
def test_workflow_step_cleans_stale_tmp_and_writes_with_the_umask(tiny, umask):
    data = tiny / "results" / "tiny" / "data"
    data.mkdir(parents=True)
    stale = data / ".matrix.parquet.k2j4h5g6.tmp"
    stale.write_bytes(b"partial")
    umask(0o002)
    run_snakemake(tiny, "results/tiny/data/manifest.json")
    assert not stale.exists()
    for name in ("matrix.parquet", "samples.tsv", "genes.tsv", "manifest.json", "truth.tsv"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o664, name
