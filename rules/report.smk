# The report's figures, in the order of scaling.report.write.FIGURES; every one is always written (a figure the study
# has no data for is a placeholder that says so), so the outputs are fixed. The PNG goes into Snakemake's report
# (`snakemake --report report.html`), with its caption in workflow/report/<name>.rst; the SVG beside it is for papers.
FIGURES = ["loss_vs_compute", "downstream_vs_loss", "loss_vs_lr", "residuals", "optimal_lr"]
FIGURE_REPORT = {  # name: (category, label)
    "loss_vs_compute": ("Scaling laws", "Loss vs compute"),
    "downstream_vs_loss": ("Scaling laws", "Downstream error vs loss"),
    "residuals": ("Scaling laws", "Fit residuals"),
    "loss_vs_lr": ("Learning rate", "Loss vs learning rate"),
    "optimal_lr": ("Learning rate", "Optimal learning rate"),
}


def report_figure(name):
    category, label = FIGURE_REPORT[name]
    return report(f"{RESULTS}/figures/{name}.png", caption=f"../workflow/report/{name}.rst", category=category,
                  labels={"figure": label})


rule report:
    """Figures (PNG and SVG) and a Markdown summary, from the study's tables alone."""
    input:
        manifest=rules.collect.output.manifest,
        fits=rules.fit.output.fits,
        predictions=rules.fit.output.predictions,
    output:
        **{name: report_figure(name) for name in FIGURES},
        svg=[f"{RESULTS}/figures/{name}.svg" for name in FIGURES],
        summary=report(f"{RESULTS}/summary.md", caption="../workflow/report/summary.rst", category="Summary"),
    params:
        title=config["title"],
        study=STUDY,
        tables=f"{RESULTS}/tables",
        figures=f"{RESULTS}/figures",
    log:
        f"{RESULTS}/logs/report.log",
    shell:
        "{SCALING} report --title {params.title:q} --study {params.study:q} --tables {params.tables:q} "
        "--figures {params.figures:q} --summary {output.summary:q} > {log:q} 2>&1"
