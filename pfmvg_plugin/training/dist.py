"""Process-group setup for the three ways the recipe starts: plain ``python``, ``torchrun`` and ``deepspeed``.

The launchers export ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` (the deepspeed
launcher also passes ``--local_rank``); under plain ``python`` we set the single-process values ourselves, which also
keeps DeepSpeed from looking for MPI (``mpi4py``). On a machine without CUDA, DeepSpeed runs on its CPU accelerator
(``DS_ACCELERATOR=cpu``) over gloo, and each of several ranks gets its share of the cores (``OMP_NUM_THREADS``).

Multi-node: ``deepspeed --hostfile hostfile recipes/finetune_lora.py --config ...`` (the launcher sets the same
variables on every node); nothing here is node-specific.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass

_SINGLE_PROCESS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    launched: bool  # started by torchrun / deepspeed (or any launcher that set the variables)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR",
                      "MASTER_PORT")


@contextlib.contextmanager
def launcher_environment():
    """Restore the launcher variables (:data:`LAUNCHER_VARIABLES`) to what they were on entry."""
    before = {k: os.environ.get(k) for k in LAUNCHER_VARIABLES}
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def setup_environment(local_rank: int | None = None) -> World:
    """Fill in what a launcher would have set, pick DeepSpeed's accelerator, and share CPU cores between ranks.

    Call before importing deepspeed. ``local_rank`` is the ``--local_rank`` the deepspeed launcher passes.
    """
    launched = all(k in os.environ for k in ("RANK", "WORLD_SIZE"))
    if local_rank is not None and local_rank >= 0:
        os.environ.setdefault("LOCAL_RANK", str(local_rank))
    if not launched:
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("LOCAL_WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(free_port()) if not launched else "29500"
    os.environ.setdefault("LOCAL_RANK", "0")
    world_size = int(os.environ["WORLD_SIZE"])
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("LOCAL_SIZE") or 0) or world_size
    cuda = cuda_available()
    if not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        # DeepSpeed's CPU accelerator counts devices from LOCAL_SIZE; unset, DeepSpeed before 0.16 shells out to
        # Debian's numactl, which a plain machine does not have.
        os.environ.setdefault("LOCAL_SIZE", str(local_world))
        if local_world > 1 and "OMP_NUM_THREADS" not in os.environ:
            threads = max(1, (os.cpu_count() or 1) // local_world)
            os.environ["OMP_NUM_THREADS"] = str(threads)
            import torch

            torch.set_num_threads(threads)
    return World(
        rank=int(os.environ["RANK"]),
        local_rank=int(os.environ["LOCAL_RANK"]),
        world_size=world_size,
        local_world_size=local_world,
        launched=launched,
    )


def device_for(world: World):
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)
        return torch.device("cuda", world.local_rank)
    return torch.device("cpu")


def init_process_group(world: World, use_deepspeed: bool, shm_comm: str = "auto") -> None:
    """Start (or reuse) the process group: DeepSpeed's comm layer for DeepSpeed, torch.distributed otherwise.

    ``shm_comm``: DeepSpeed on CPU JIT-builds a shared-memory allreduce op when its comm layer starts (35-90 s once,
    cached in ``TORCH_EXTENSIONS_DIR``). It only speeds up several ranks on one machine, so ``auto`` skips it for a
    single rank; ``off`` always skips it (gloo then does every collective).
    """
    import torch
    import torch.distributed as tdist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if use_deepspeed:
        import deepspeed
        import deepspeed.comm.comm as ds_comm

        if ds_comm.cdb is not None and ds_comm.cdb.is_initialized():
            return
        skip_shm = shm_comm == "off" or (shm_comm == "auto" and world.local_world_size <= 1)
        if skip_shm and not torch.cuda.is_available():
            import importlib

            ds_torch = importlib.import_module("deepspeed.comm.torch")  # `deepspeed.comm.torch` attribute is torch
            original = ds_torch.build_shm_op
            ds_torch.build_shm_op = lambda: None
            try:
                deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
            finally:
                ds_torch.build_shm_op = original
        else:
            deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
        return
    if world.world_size > 1 and not tdist.is_initialized():
        tdist.init_process_group(backend=backend)


def shutdown() -> None:
    """Leave the process group at the end of a launched run: a group still alive at interpreter exit can abort the
    process in its threads' teardown (``terminate called without an active exception``) after the work is done."""
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        barrier()
        tdist.destroy_process_group()


def barrier() -> None:
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1:
        tdist.barrier()


def all_reduce_mean(values: list[float]) -> list[float]:
    """Mean over ranks of a few floats (one collective); identity on one rank."""
    import torch
    import torch.distributed as tdist

    if not (tdist.is_available() and tdist.is_initialized()) or tdist.get_world_size() == 1:
        return values
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=device)
    tdist.all_reduce(t)
    return (t / tdist.get_world_size()).tolist()


def broadcast_object(obj, src: int = 0):
    import torch.distributed as tdist

    if not (tdist.is_available() and tdist.is_initialized()) or tdist.get_world_size() == 1:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=src)
    return box[0]
