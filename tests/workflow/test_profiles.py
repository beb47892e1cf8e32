"""The Snakemake profiles: what resources each job would ask for (dry runs, no cluster needed).

The GPU rules are found in the workflow itself (every rule whose params pass the config's
`device` to its script), never listed by hand. The SLURM profile itself runs on a real one-node
cluster in `make test-slurm` (tests/slurm/).
"""

from __future__ import annotations

import re

import pytest
import yaml

from support import REPO, device_rules, planned_job_details, workflow_rules, write_config

PROFILES = REPO / "profiles"
#: A study with zoo models (url checkpoints; a dry run reads none), so zoo_model jobs are planned too.
ZOO = {"study": "zoo", "model_grid": None, "activations": {"layers": ["layer1", "layer4", "penultimate", "logits"]},
       "models": [{"id": f"url-{s}", "source": "url", "arch": "resnet18", "eps": 3, "seed": s,
                   "url": "file:///nonexistent/resnet18.ckpt"} for s in (0, 1)]}


GPU_RULES = device_rules()


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """planned(profile) -> {rule: [resources of each job]} of the tiny study and a zoo study
    (profile None: the rules' own resources)."""
    zoo = write_config(tmp_path_factory.mktemp("zoo") / "zoo.yaml", ZOO)
    cache = {}

    def plan(profile: str | None) -> dict[str, list[dict[str, str]]]:
        if profile not in cache:
            args = ("--profile", str(PROFILES / profile)) if profile else ()
            jobs: dict[str, list[dict[str, str]]] = {}
            for configfiles in (None, (zoo,)):
                kwargs = {"configfiles": configfiles} if configfiles else {}
                for job in planned_job_details(tmp_path_factory.mktemp("plan"), *args, **kwargs):
                    jobs.setdefault(job["rule"], []).append(job["resources"])
            cache[profile] = jobs
        return cache[profile]

    return plan


def gpus(resources: dict[str, str]) -> int:
    return int(resources.get("gpu", 0))


def test_every_rule_on_the_device_declares_one_gpu_and_no_other_rule_does(planned):
    assert {"train_model", "zoo_model", "retrain_heads", "transfer", "compare_similarity"} <= GPU_RULES
    jobs = planned(None)
    assert GPU_RULES <= set(jobs), f"not planned by the test studies: {GPU_RULES - set(jobs)}"
    declaring = {rule for rule, resources in jobs.items() if any(gpus(r) for r in resources)}
    assert declaring == GPU_RULES
    for rule in GPU_RULES:
        assert all(gpus(r) == 1 for r in jobs[rule]), rule


def test_every_gpu_rule_script_uses_its_job_gpu_resource():
    """What makes `gpu=0` mean "on the CPU": each script resolves `device` with the job's gpu."""
    for rule in GPU_RULES:
        script = re.search(r'^    script:\n        "\.\./scripts/(\w+\.py)"', workflow_rules()[rule], re.M).group(1)
        text = (REPO / "workflow" / "scripts" / script).read_text()
        assert 'resolve_device(p.device, snakemake.resources.get("gpu", 0))' in text, script


def test_local_profile_caps_concurrent_gpu_jobs(planned):
    """At most `resources: gpu` GPU jobs at once; the rules the profile moves to the CPU hold none."""
    profile = yaml.safe_load((PROFILES / "local" / "config.yaml").read_text())
    assert profile["resources"]["gpu"] == 1
    on_cpu = {rule for rule, res in profile.get("set-resources", {}).items() if res.get("gpu") == 0}
    assert on_cpu == {"compare_similarity"}
    jobs = planned("local")
    for rule in GPU_RULES:
        assert all(gpus(r) == (0 if rule in on_cpu else 1) for r in jobs[rule]), rule


def test_slurm_profile_asks_for_no_gpu(planned):
    jobs = planned("slurm")
    asking = {rule for rule, resources in jobs.items() if any(gpus(r) for r in resources)}
    assert not asking, f"rules that would get `sbatch --gpus` on a GPU-less cluster: {asking}"
    for rule in GPU_RULES:  # declared and set to 0 (so the job resolves `auto` to the CPU)
        assert all(r.get("gpu") == "0" for r in jobs[rule]), rule


def test_slurm_gpu_profile_gives_every_gpu_rule_a_gpu_on_the_gpu_partition(planned):
    profile = yaml.safe_load((PROFILES / "slurm-gpu" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    partition = profile["set-resources"]["train_model"]["slurm_partition"]
    on_cpu = {"compare_similarity"}  # RTD's ripser is CPU-only (profiles/slurm-gpu/README.md)
    jobs = planned("slurm-gpu")
    for rule, resources in jobs.items():
        wants_gpu = rule in GPU_RULES - on_cpu
        for r in resources:
            assert (gpus(r), r.get("slurm_partition")) == ((1, partition) if wants_gpu else (0, None)), rule


@pytest.mark.parametrize("name", ["slurm", "slurm-gpu"])
def test_slurm_profiles_pass_memory_and_runtime_of_the_rules(planned, name):
    """A rule's own mem_mb and runtime reach sbatch; the profile's defaults fill in where it has none."""
    jobs, own = planned(name), planned(None)
    defaults = yaml.safe_load((PROFILES / name / "config.yaml").read_text())["default-resources"]
    kinds = set()
    for rule in own:
        for key in ("mem_mb", "runtime"):
            declared = [r.get(key) for r in own[rule]]
            kinds.add(declared[0] is None)
            expected = [str(defaults[key]) if value is None else value for value in declared]
            assert sorted(r[key] for r in jobs[rule]) == sorted(expected), (rule, key)
    assert kinds == {True, False}  # both kinds of rule were checked


def test_local_profile_runs_gpu_jobs_one_at_a_time(tmp_path):
    """Real scheduling, not the profile's text: a toy workflow of four jobs that each hold
    `gpu=1` for a second, run through profiles/local with two cores, never overlap; the same
    jobs declaring no GPU do (so two cores could have run them together)."""
    assert overlaps(hold_jobs(tmp_path / "gpu1", "gpu=1")) == 0
    assert overlaps(hold_jobs(tmp_path / "gpu0", "gpu=0")) >= 1


def hold_jobs(work, resources: str, *args: str) -> list[tuple[float, float]]:
    """Four toy jobs declaring ``resources`` that each hold them for a second, run through
    profiles/local with two cores (and ``args``); their (start, end) times, sorted."""
    import subprocess
    import sys
    from pathlib import Path

    work.mkdir()
    (work / "Snakefile").write_text(
        "import time\n"
        "rule all:\n    input: expand('t/{i}.txt', i=range(4))\n"
        "rule hold:\n    output: 't/{i}.txt'\n"
        f"    resources: {resources}\n"
        "    run:\n"
        "        start = time.time(); time.sleep(1.0)\n"
        "        open(output[0], 'w').write(f'{start} {time.time()}')\n"
    )
    snakemake = Path(sys.executable).with_name("snakemake")
    subprocess.run([str(snakemake), "--profile", str(PROFILES / "local"), "--cores", "2", "--directory", str(work),
                    "--snakefile", str(work / "Snakefile"), "--quiet", *args], check=True, capture_output=True)
    return sorted(tuple(map(float, (work / "t" / f"{i}.txt").read_text().split())) for i in range(4))


def overlaps(spans) -> int:
    return sum(b[0] < a[1] for a, b in zip(spans, spans[1:]))


def test_jobs_sharing_one_card_never_declare_more_than_its_memory_together(tmp_path):
    """Real scheduling: with four GPU slots on one card (`--resources gpu=4
    gpu_mem_mb=1000`), jobs declaring 600 MB each never run together (two would need 1200),
    jobs declaring 400 MB do; and the profile's own cap (its gpu_mem_mb) is what a job of the
    default study fits in."""
    assert overlaps(hold_jobs(tmp_path / "big", "gpu=1, gpu_mem_mb=600", "--resources", "gpu=4", "gpu_mem_mb=1000")) == 0
    assert overlaps(hold_jobs(tmp_path / "small", "gpu=1, gpu_mem_mb=400", "--resources", "gpu=4", "gpu_mem_mb=1000")) >= 1
    profile = yaml.safe_load((PROFILES / "local" / "config.yaml").read_text())
    assert profile["resources"]["gpu_mem_mb"] >= 16000 and profile["set-resources"]["compare_similarity"]["gpu_mem_mb"] == 0
