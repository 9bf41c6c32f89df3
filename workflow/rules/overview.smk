# What the user reads first: the config the run used (results/{run}/config.yaml,
# to pass back with --configfile) and overview.html, the verdict and the headline
# tables that the report's landing page shows.


rule run_config:
    output:
        config=f"{R}/config.yaml",
    log:
        f"{R}/logs/run_config.log",
    benchmark:
        f"{R}/benchmarks/run_config.tsv"
    # local (not a localrules: list, which a module's renamed rules would not match)
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        config=config,
    script:
        "../scripts/run_config.py"


rule overview:
    input:
        summary=f"{R}/summary.json",
        rounds=f"{R}/model/rounds.tsv",
        risk=f"{R}/risk_genes.tsv",
        labels=f"{R}/label_metrics.tsv",
    output:
        html=report(
            f"{R}/overview.html",
            caption="../report/overview.rst",
            category="0. Overview",
        ),
        landing=f"{R}/report/landing.html",
    log:
        f"{R}/logs/overview.log",
    benchmark:
        f"{R}/benchmarks/overview.tsv"
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=job_mem_mb("overview"),
        runtime=job_runtime("overview"),
    script:
        "../scripts/overview.py"
