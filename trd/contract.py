"""The files of an experiment and of a stage directory, and the values in them that stages, the dispatcher,
the status view and the report agree on. Each of those reads these names from here and nowhere else."""
from __future__ import annotations

# The experiment directory <out_root>/<name>/
PLAN_FILE = "plan.json"  # every stage of the experiment: kind, dir, labels, inputs, lineage, sweep point
CONFIG_FILE = "config.yaml"  # the resolved config it was planned from
DISPATCH_FILE = "dispatch.json"
STAGE_LINKS = "stages"  # a link per stage name to its shared stage directory
JOBS_DIR = "jobs"  # submitit's files of every job of the experiment: <job id>_<task>_log.{out,err}, ...
COMMAND_FILE = "command.txt"  # the command line that submitted it: what reruns the stages that are not done
PLAN_FORMAT = 2  # plan.json written before 2026-12-03 has no format key: that is format 1

# A stage directory <out_root>/stages/<kind>-<hash>/
STAGE_FILE = "stage.json"  # what the stage is: kind, config, inputs, labels (written when planned)
METRICS_FILE = "metrics.json"  # what it got: status, results, labels, code version (written by its job)
JOB_FILE = "job.json"  # the job that runs it
PROGRESS_FILE = "progress.json"  # what its job is doing now (trd.progress), for the console and status
MODEL_FILE = "model.safetensors"  # a released model (body + target head)
SOURCE_HEAD_FILE = "source_head.safetensors"  # the private source head kept beside it

# metrics.json
RUNNING, DONE, FAILED, DIVERGED = "running", "done", "failed", "diverged"
PENDING = "pending"  # no metrics.json yet
MODEL_LABELS = "model_labels"  # labels that name the model a stage is about
ATTACK_LABELS = "attack_labels"  # labels that name the attack or evaluation
# Keys trd.runner writes around a stage's own results: they describe the run, not what it measured.
RUNNER_KEYS = frozenset({"kind", "stage", "hash", "code", MODEL_LABELS, ATTACK_LABELS, "status", "log", "world_size",
                         "timings", "error", "traceback"})
