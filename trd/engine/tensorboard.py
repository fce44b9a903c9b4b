"""TensorBoard, progress bars in the job's log and the live progress file (trd.progress), on rank 0 only."""
from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from trd.engine.distributed import DistEnv
from trd.progress import ProgressFile


class StageLogger:
    def __init__(self, stage_dir: str | Path, env: DistEnv):
        self.env = env
        self.writer = None
        self.live = ProgressFile(stage_dir, enabled=env.is_main)
        if env.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(stage_dir) / "tensorboard"))

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, float(value), step)

    def scalars(self, values: dict, step: int, prefix: str = "") -> None:
        for k, v in values.items():
            self.scalar(f"{prefix}{k}", v, step)

    def hparams(self, hparams: dict, metrics: dict, run: str = "hparams") -> None:
        """One row of TensorBoard's HParams tab (a sub-run named run): settings and the results they gave.
        None settings show as "none"; None results (nothing measured) are left out."""
        if self.writer is not None:
            self.writer.add_hparams({k: "none" if v is None else v for k, v in hparams.items()},
                                    {k: float(v) for k, v in metrics.items() if v is not None}, run_name=run)

    def progress(self, iterable=None, **kwargs):
        return tqdm(iterable, disable=not self.env.is_main, dynamic_ncols=True, mininterval=2.0, **kwargs)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
