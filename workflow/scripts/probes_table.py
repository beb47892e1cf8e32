"""Attack success rates and inversion losses of every source model (thin entry point)."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
from robustlens.store import open_store
from robustlens.tables import probes_table, write_table

p = snakemake.params
paths = iter(snakemake.input)
summaries = {}
for probe in p.probes:
    for model in p.sources:
        ds = open_store(next(paths))
        if probe == "adversarial":
            summaries[probe, model] = {k: ds.attrs[k] for k in ("success_rate", "robust_accuracy")}
        else:
            summaries[probe, model] = {"initial_loss": ds["initial_loss"].mean().item(), "final_loss": ds["final_loss"].mean().item()}
write_table(probes_table(p.study, p.models, summaries), snakemake.output[0])
