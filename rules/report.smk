rule report:
    """Figures and a Markdown summary."""
    input:
        runs=rules.collect.output.runs,
        fit=rules.fit.output.overtraining,
    output:
        compute=report(
            f"{RESULTS}/figures/loss_vs_compute.png",
            caption="../workflow/report/loss_vs_compute.rst",
            category="Scaling laws",
        ),
        lr=report(
            f"{RESULTS}/figures/loss_vs_lr.png",
            caption="../workflow/report/loss_vs_lr.rst",
            category="Learning rate",
        ),
        summary=report(
            f"{RESULTS}/summary.md",
            caption="../workflow/report/summary.rst",
            category="Summary",
        ),
    params:
        title=config["title"],
        study=STUDY,
    log:
        f"{RESULTS}/logs/report.log",
    shell:
        "{SCALING} report --title {params.title:q} --study {params.study} --runs {input.runs} --fit {input.fit} "
        "--compute-png {output.compute} --lr-png {output.lr} --summary {output.summary} > {log} 2>&1"
