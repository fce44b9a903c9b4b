import math

import pytest
import torch

from trd.engine.optim import build_optimizer, build_scheduler, lr_factor


def test_cosine_with_warmup():
    cfg = {"schedule": "cosine", "warmup_steps": 2}
    assert lr_factor(0, 10, cfg) == pytest.approx(0.5)
    assert lr_factor(1, 10, cfg) == pytest.approx(1.0)
    assert lr_factor(2, 10, cfg) == pytest.approx(1.0)
    assert lr_factor(6, 10, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(10, 10, cfg) == pytest.approx(0.0)


def test_warmup_as_a_fraction_of_the_run():
    cfg = {"schedule": "cosine", "warmup_fraction": 0.2}
    assert [round(lr_factor(s, 10, cfg), 6) for s in (0, 1)] == [0.5, 1.0]  # 2 warm-up steps of 10
    assert lr_factor(10, 10, cfg) == pytest.approx(0.0)
    assert lr_factor(0, 1000, cfg) == pytest.approx(1 / 200)


def test_step_schedule_and_constant():
    cfg = {"schedule": "step", "milestones": [0.5], "gamma": 0.1}
    assert lr_factor(4, 10, cfg) == 1.0 and lr_factor(5, 10, cfg) == pytest.approx(0.1)
    assert lr_factor(7, 10, {"schedule": "constant"}) == 1.0


def test_optimizers_and_errors():
    model = torch.nn.Linear(3, 2)
    for name, cls in (("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)):
        opt = build_optimizer(model.parameters(), {"name": name, "lr": 0.1})
        assert isinstance(opt, cls)
    sched = build_scheduler(opt, {"schedule": "cosine"}, total_steps=4)
    opt.step(), sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi / 4)))
    with pytest.raises(ValueError, match="unknown optimiser optim.name='lbfgs'"):
        build_optimizer(model.parameters(), {"name": "lbfgs", "lr": 0.1})
    frozen = torch.nn.Linear(3, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(frozen.parameters(), {"name": "sgd", "lr": 0.1})


def test_deepspeed_config_never_leaves_gradient_clipping_to_deepspeeds_default():
    from trd.engine.deepspeed_engine import deepspeed_config

    assert deepspeed_config({"zero_stage": 0}, 8, 1, grad_clip=0.0)["gradient_clipping"] == 0.0
    assert deepspeed_config({"zero_stage": 1}, 8, 2, grad_clip=2.5)["gradient_clipping"] == 2.5
    with pytest.raises(ValueError, match="deepspeed.zero_stage=3 is not supported"):
        deepspeed_config({"zero_stage": 3}, 8, 1, grad_clip=0.0)


def test_cpu_runs_leave_no_deepspeed_buffers_in_dev_shm(tmp_path):
    import glob
    import subprocess
    import sys

    from trd.engine.distributed import free_port

    port = free_port()
    code = ("import os; os.environ.update(RANK='0', WORLD_SIZE='1', LOCAL_RANK='0', MASTER_ADDR='127.0.0.1', "
            f"MASTER_PORT='{port}'); from trd.engine.distributed import detect_env, init_distributed; "
            "init_distributed(detect_env())")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
    assert not glob.glob(f"/dev/shm/deepspeed_allreduce_buffer_*_{port}_*")
