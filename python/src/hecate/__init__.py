"""Hecate: FSSDP mixture-of-experts layers for PyTorch (docs/python.md).

    hecate.init()        from the torchrun environment (RANK, WORLD_SIZE, LOCAL_WORLD_SIZE,
                         MASTER_ADDR; the rendezvous port HECATE_MASTER_PORT, else MASTER_PORT + 1,
                         since torchrun's own store holds MASTER_PORT); with HECATE_CONTROLLER
                         (host:port; HECATE_JOB, HECATE_TLS_*) plans come from the controller
    hecate.torch.MoE     the layer (create every one before the first forward)
    hecate.reduce_gradients()  after backward: experts' gradients summed to their keepers
                         (optional: step() does it)
    hecate.step()        after backward: experts' gradients summed, Adam, the next plan
    hecate.all_reduce_   sums a tensor over the ranks (dense gradients without torch.distributed)
    hecate.global_sum    sums a number over the ranks (the loss to print)
    hecate.plan_info()   the plan in force
    hecate.phase_times() the MoE layers' phases in the last step
    hecate.bytes_sent()  this rank's bytes sent since init(), by collective
    hecate.state_dict(), hecate.load_state_dict()   this rank's heterogeneous shards
    hecate.shutdown()
"""
import os
import socket
import time
import warnings

import torch as _torch

from hecate import _build_info

_running = _torch.__version__.split("+")[0]
if _running.split(".")[:2] != _build_info.TORCH_VERSION.split(".")[:2]:
    raise ImportError(
        f"hecate was built against LibTorch {_build_info.TORCH_VERSION}, but the running torch is "
        f"{_torch.__version__}: rebuild hecate against this torch (docs/python.md)")

from hecate import _C  # noqa: E402  (after the version check: a mismatch must not load it)


def _env_int(name, default):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"hecate.init: {name}={value!r} is not an integer") from None


def init(policy="hecate", timeout_s=60.0, overlap=True, calibration=True, attention_ms=0.5,
         device_gflops=20.0, link_gbytes=2.0, copy_overhead_ms=0.0, reshard_period=100, cpu=None,
         keep_freed_memory=True):
    """Sets up this rank from the torchrun environment (one process without it).

    overlap: spAG, re-gathers and spRS run on their own connections and thread, overlapped with
    the model's compute (False: blocking, where they are needed). calibration: plans of policies
    that calibrate are calibrated on each iteration's counts after the gate.
    attention_ms, device_gflops, link_gbytes, copy_overhead_ms: what the planners assume about
    this hardware (per block attention forward time, the expert FLOP rate, the link bandwidth, the
    fixed cost of holding an expert copy), and reshard_period (how often the local planner may
    re-shard, iterations; 0: never), with hecate-worker's flags' names and defaults: a job planned
    through either sees the same cluster. cpu: pin every thread of this process to that core and
    keep LibTorch to one intra-op thread, as hecate-worker --cpu does (None: no pinning).
    keep_freed_memory: as hecate-worker, have malloc keep the memory a step frees for the next one
    instead of returning it to the kernel and faulting it in again (process-wide mallopt; False
    leaves malloc as it is). ValueError when out of range."""
    if cpu is not None and int(cpu) < 0:
        raise ValueError(f"hecate.init: cpu must be a core number >= 0, got {cpu}")
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    per_node = _env_int("LOCAL_WORLD_SIZE", world)
    master_port = _env_int("MASTER_PORT", 29500)
    port = _env_int("HECATE_MASTER_PORT", master_port + 1)
    # An incarnation per start: torchrun's restart count when it restarts the group.
    restarts = _env_int("TORCHELASTIC_RESTART_COUNT", -1)
    incarnation = restarts + 1 if restarts >= 0 else int(time.time() * 1e6)
    _C.init(rank, world, os.environ.get("MASTER_ADDR", "127.0.0.1"), port, per_node, policy,
            float(timeout_s), os.environ.get("HECATE_CONTROLLER", ""),
            os.environ.get("HECATE_JOB", "hecate"), socket.gethostname(), incarnation,
            bool(overlap), bool(calibration), float(attention_ms), float(device_gflops),
            float(link_gbytes), float(copy_overhead_ms), int(reshard_period),
            -1 if cpu is None else int(cpu))
    if cpu is not None:
        _torch.set_num_threads(1)  # hecate-worker's --threads default
    if keep_freed_memory:
        why_not = _C.keep_freed_memory()
        if why_not:
            warnings.warn(f"hecate.init: keep_freed_memory: {why_not} (continuing)")


def reduce_gradients():
    """After backward on every rank: the experts' gradients summed to the ranks that keep them
    (MoE.expert_grad reads them); step() does it when it has not been done."""
    _C.reduce_gradients()


def step(lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
    """After backward on every rank: the experts' gradients summed to their owners, Adam on the
    experts, the iteration's expert loads to the planner and the next plan applied."""
    _C.step(lr, betas[0], betas[1], eps)


def all_reduce_(tensor):
    """Sums a contiguous float32 or float64 CPU tensor over the ranks, in place."""
    _C.all_reduce_(tensor)
    return tensor


def global_sum(value):
    """The sum over the ranks of a number or a one-element tensor (each rank's part of the loss,
    say), as a float: summed in float64, in a collective of its own, as hecate-worker sums its
    loss. Takes no part in autograd; every rank calls it at the same point."""
    return _C.global_sum(value)


def plan_info():
    return _C.plan_info()


def phase_times():
    """The MoE layers' wall time in the last step, ms, summed over the layers: gate (count
    exchange and dispatch planning), dispatch and combine (the All-to-Alls, forward and
    backward), expert (the FFNs, forward and backward), spag / sprs (the sparse collectives) and
    the part of them the training thread waited for (*_exposed), optimizer (Adam); and
    between_layers, the model's own forward time between consecutive MoE layers."""
    return _C.phase_times()


def bytes_sent():
    """The bytes this rank has sent since init(), by collective: "all_to_all" (tokens),
    "sparse_all_gather" (copies, shadows and re-gathers), "sparse_reduce_scatter" (their
    gradients, or the replicas' all-reduce), "all_reduce", "all_gather", "migration" (experts
    moving to new keepers with their Adam state), "control" (plan agreement, counts)."""
    return _C.bytes_sent()


def state_dict():
    """This rank's part of a checkpoint (the plan in force, the iteration, and the experts it
    keeps with their Adam state), for torch.save; call between steps. Save the dense model and
    its optimizer with their own state_dict()s."""
    return _C.state_dict()


def load_state_dict(state):
    """Restores this rank's part of a checkpoint (the same rank of the same ranks and layers);
    call after creating the layers and before the first forward."""
    _C.load_state_dict(state)


def shutdown():
    _C.shutdown()
