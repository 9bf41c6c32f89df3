#!/usr/bin/env bash
# Install genovae into its own virtual environment (.venv), run the demo workflow
# and build its HTML report.
#   bash run_demo.sh            # uses all cores
#   bash run_demo.sh --cores 2  # extra arguments go to snakemake
# GENOVAE_VENV=DIR uses (or creates) another virtual environment.
set -euo pipefail
cd "$(dirname "$0")"
venv="${GENOVAE_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
    echo "genovae: creating the virtual environment $venv"
    if ! python3 -m venv "$venv"; then
        rm -rf "$venv"
        echo "genovae: could not create a virtual environment with python3 -m venv." >&2
        echo "         On Debian/Ubuntu install it first: sudo apt-get install python3-venv" >&2
        exit 1
    fi
fi
echo "genovae: installing requirements.txt into $venv (first time: a few minutes)"
"$venv/bin/python" -m pip install -q -r requirements.txt
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--cores all)
"$venv/bin/python" -m snakemake "${args[@]}"
"$venv/bin/python" -m snakemake "${args[@]}" --report results/demo/report.html
echo
echo "genovae demo finished. Report: $(pwd)/results/demo/report.html"
echo "Summary: $(pwd)/results/demo/summary.json"
echo "Use this environment for your own runs: source $venv/bin/activate"
