# genovae: a VAE workflow for gene-expression cohorts.
#
#   collect -> preprocess -> train (round r) -> evaluate -> decide (checkpoint)
#     -> [retrain until the threshold is met or max_rounds] -> select_model
#     -> apply (latent, test metrics, risk genes, ...) -> plots -> summarize (verdict)
#     -> overview, report, export_h5ad
#   apply_new (on demand): a new cohort through the saved transform and model
#   small cohorts run fewer, fatter jobs (resources.job_layout): each round's train job
#   also evaluates it, and apply_model applies the selected model in one job
#
# Read the stages in workflow/rules/; the logic lives in workflow/lib/genovae/.


from pathlib import Path

# The demo's config applies only when no --configfile is given: a user's config
# stands alone (every key it leaves out takes the schema's default, never the demo's).
# It is config/config.yaml of the working directory (this repository, or a copy made by
# snakedeploy), else genovae's own (snakemake -s path/to/genovae/Snakefile elsewhere; its
# data paths are then genovae's files, see common.smk). A module given `config:` skips it.
OWN_DEMO_CONFIG = not Path("config/config.yaml").is_file()

if not workflow.overwrite_configfiles:

    configfile: workflow.source_path("config/config.yaml") if OWN_DEMO_CONFIG else "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/collect.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/apply.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/apply_new.smk"
include: "workflow/rules/overview.smk"


report: landing_page()


rule all:
    default_target: True
    input:
        final_outputs(),


onsuccess:
    print(end_of_run_message())
    cancel_idle_scheduler_timers()


onerror:
    cancel_idle_scheduler_timers()
