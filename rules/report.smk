# The report's figures (scaling.report.FIGURES: name → title, category); every one is always written (a figure the
# study has no data for is a placeholder that says so), so the outputs are fixed. The PNG goes into Snakemake's report
# (`snakemake --report report.html`), with its caption in workflow/report/<name>.rst; the SVG beside it is for papers.
from scaling.report import FIGURES


def report_figure(name):
    title, category = FIGURES[name]
    return report(f"{RESULTS}/figures/{name}.png", caption=f"../workflow/report/{name}.rst", category=category,
                  labels={"figure": title})


rule report:
    """Figures (PNG and SVG) and a Markdown summary, from the study's tables alone."""
    input:
        manifest=rules.collect.output.manifest,
        fits=rules.fit.output.fits,
        parameters=rules.fit.output.parameters,
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
