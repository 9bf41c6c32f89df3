"""Mutation checks: break a feature on purpose, run the test that guards it, and show that it fails.

    python3 tests/mutation_check.py        # every mutation (about a minute)

Each entry replaces one exact piece of code (it must occur once), runs its tests, restores the file
(also on Ctrl-C) and prints the test result before and after. A mutation whose tests still pass means
the test does not check what its name claims. Not collected by pytest (no test_ prefix)."""
import subprocess, sys, shutil
from pathlib import Path
REPO = Path(__file__).resolve().parents[1]
M = [
  ("DP clipping off", "workflow/lib/genovae/privacy.py", "max_grad_norm=max_grad_norm,", "max_grad_norm=1e9,",
   ["tests/test_privacy.py::test_dp_clips_every_per_sample_gradient"]),
  ("'seed' read as a fourth split", "workflow/lib/genovae/collect.py",
   "return max(2, sum(1 for s in SPLITS if split_fractions.get(s, 0) > 0))", "return max(2, sum(1 for s in split_fractions if split_fractions.get(s, 0) > 0))",
   ["tests/test_collect.py::test_split_seed_is_not_a_split"]),
  ("cpus_per_task hard-coded to 1", "profiles/slurm/config.yaml", "cpus_per_task: threads", "cpus_per_task: 1",
   ["tests/test_slurm.py::test_slurm_profile_requests"]),
  ("config error dumps the schema", "workflow/lib/genovae/settings.py",
   "raise ConfigError(*_error_message(jsonschema.exceptions.best_match(errors)))",
   "raise ConfigError('config', str(jsonschema.exceptions.best_match(errors)))",
   ["tests/test_reliability.py::test_bad_config_is_refused_before_anything_runs[unknown_metric]"]),
  ("privacy scan reads raw bytes only", "tests/test_privacy.py", "    raw = path.read_bytes()\n    parts = [raw]\n",
   "    raw = path.read_bytes()\n    return raw\n    parts = [raw]\n",
   ["tests/test_privacy.py::test_the_privacy_scan_reads_inside_compressed_files"]),
  ("cross-node SLURM holder not asked", "workflow/lib/genovae/io.py", "    if previous and _still_running_elsewhere(previous):",
   "    if False:", ["tests/test_apply_steps.py::test_a_lock_held_by_a_slurm_job_on_another_node_is_checked_with_squeue"]),
  ("downloaded copy not compared with the declared length", "workflow/lib/genovae/sources/remote.py",
   "    if declared is None or actual == declared:", "    if True:",
   ["tests/test_bad_inputs.py::test_workflow_download_cut_short_without_a_length_in_the_transfer_is_refused"]),
  ("redirect targets not checked", "workflow/lib/genovae/sources/remote.py", "            if not is_url(target):",
   "            if False:", ["tests/test_downloads.py::test_probe_refuses_what_must_not_be_downloaded"]),
]
failed = 0
for name, f, old, new, tests in M:
    p = REPO / f
    text = p.read_text()
    assert text.count(old) == 1, (name, text.count(old))
    base = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "", *tests], cwd=REPO, capture_output=True, text=True)
    p.write_text(text.replace(old, new))
    try:
        mut = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "", *tests], cwd=REPO, capture_output=True, text=True)
    finally:
        p.write_text(text)
    failed += base.returncode != 0 or mut.returncode == 0
    print(f"{name}: unmutated rc {base.returncode} ({base.stdout.strip().splitlines()[-1]}); mutated rc {mut.returncode} ({mut.stdout.strip().splitlines()[-1]})", flush=True)
sys.exit(1 if failed else 0)
