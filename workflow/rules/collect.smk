if SIMULATE:

    rule simulate:
        output:
            **pseudonym_map_output(),
            matrix=f"{R}/data/matrix.parquet",
            samples=f"{R}/data/samples.tsv",
            genes=f"{R}/data/genes.tsv",
            manifest=f"{R}/data/manifest.json",
            truth=f"{R}/data/truth.tsv",
        log:
            f"{R}/logs/simulate.log",
        benchmark:
            f"{R}/benchmarks/simulate.tsv"
        conda:
            "../../envs/data.yaml"
        resources:
            mem_mb=job_mem_mb("simulate"),
            runtime=job_runtime("simulate"),
        params:
            collect=S.collect_params(),
        script:
            "../scripts/simulate.py"

else:

    rule collect:
        input:
            **collect_inputs(),
        output:
            **pseudonym_map_output(),
            matrix=f"{R}/data/matrix.parquet",
            samples=f"{R}/data/samples.tsv",
            genes=f"{R}/data/genes.tsv",
            manifest=f"{R}/data/manifest.json",
        log:
            f"{R}/logs/collect.log",
        benchmark:
            f"{R}/benchmarks/collect.tsv"
        conda:
            "../../envs/data.yaml"
        resources:
            mem_mb=job_mem_mb("collect"),
            runtime=job_runtime("collect"),
        params:
            collect=COLLECT_PARAMS,
        script:
            "../scripts/collect.py"
