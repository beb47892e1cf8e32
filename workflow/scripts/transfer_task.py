"""One downstream task of the transfer study into results/tasks/ (thin entry point)."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
from robustlens.data import load_dataset, save_dataset
from robustlens.tasks import make_task, parse_task

p = snakemake.params
source = parse_task(p.task)["source"]
dataset = load_dataset(snakemake.input.dataset, "test") if "dataset" in snakemake.input.keys() else None
task = make_task(p.task, {source: p.settings}, p.image_size, dataset, root=p.root)
print(f"{p.task}: {len(task['x_train'])} train, {len(task['x_test'])} test, images {task['x_train'].shape[1:]} "
      f"{task['x_train'].dtype}, {task['kind']}, {int(task['n_outputs'])} outputs")
save_dataset(task, snakemake.output[0])
