"""One rank of //python:torchrun_moe_test, started by torchrun: two hecate.torch.MoE layers over
the ranks, planned every iteration by the local planner from skewed routing, against a plain
PyTorch MoE on the global batch computed on every rank (no Hecate code in it): the outputs, the
gates' gradients (summed over the ranks) and every kept expert's summed gradient, each iteration,
float64. Every rank must run the same plan each iteration. With HECATE_CONTROLLER the plans come
from the controller. Exits non-zero on any mismatch."""
import os
import sys

import torch

import hecate

from moe_common import D, E, F, K, LAYERS, TOKENS, forward_backward, reference_moe, skewed_moes

ITERATIONS = int(os.environ.get("HECATE_TEST_ITERATIONS", "8"))
LR, B1, B2, EPS = 1e-2, 0.9, 0.999, 1e-8


def close(a, b, what):
    if not torch.allclose(a, b, rtol=1e-9, atol=1e-11):
        err = (a - b).abs().max().item()
        sys.exit(f"rank {os.environ['RANK']}: {what} differs by {err:.3g}")


def main():
    # HECATE_TEST_POLICY=fastermoe: shadows, which pay only where the planners assume slow
    # experts (HECATE_TEST_DEVICE_GFLOPS) against this test's tiny ones.
    hecate.init(policy=os.environ.get("HECATE_TEST_POLICY", "hecate"),
                device_gflops=float(os.environ.get("HECATE_TEST_DEVICE_GFLOPS", "20")))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    moes = skewed_moes()
    gates = [m.gate.weight.detach().clone().requires_grad_(True) for m in moes]
    experts = None
    adam = None
    versions, copies, epochs = [], [], []
    for it in range(ITERATIONS):
        x_all, t_all, h, _ = forward_backward(moes, it, rank, world)
        mine = slice(rank * TOKENS, (rank + 1) * TOKENS)
        hecate.reduce_gradients()
        if experts is None:
            # Every expert's initial values: each from the rank that keeps it.
            full = torch.zeros(LAYERS, E, 2 * D * F, dtype=torch.float64)
            kept = torch.zeros(LAYERS, E, dtype=torch.float64)
            for l, m in enumerate(moes):
                for e in m.owned_experts():
                    full[l, e] = m.expert_parameters(e)
                    kept[l, e] = 1
            hecate.all_reduce_(full)
            hecate.all_reduce_(kept)
            for l in range(LAYERS):
                for e in range(E):
                    full[l, e] /= kept[l, e]
            experts = [[full[l, e].clone().requires_grad_(True) for e in range(E)]
                       for l in range(LAYERS)]
            adam = [[(torch.zeros(2 * D * F, dtype=torch.float64),
                      torch.zeros(2 * D * F, dtype=torch.float64)) for _ in range(E)]
                    for _ in range(LAYERS)]
        # The reference on the global batch.
        r = x_all.clone()
        for l in range(LAYERS):
            w1 = [p[: D * F].view(D, F) for p in experts[l]]
            w2 = [p[D * F:].view(F, D) for p in experts[l]]
            r = r + reference_moe(r, gates[l], w1, w2, K)
        close(h.detach(), r.detach()[mine], f"output, iteration {it}")
        ((r - t_all) ** 2).sum().div(world * TOKENS).backward()
        for l, m in enumerate(moes):
            close(m.gate.weight.grad, gates[l].grad, f"gate {l} gradient, iteration {it}")
            for e in m.owned_experts():
                close(m.expert_grad(e), experts[l][e].grad,
                      f"expert {l}/{e} gradient, iteration {it}")
        info = hecate.plan_info()
        versions.append(info["version"])
        copies.append(info["copies"])
        epochs.append(info["epoch"])
        key = float(info["epoch"] * 1000000 + info["version"])
        same = torch.tensor([key], dtype=torch.float64)
        hecate.all_reduce_(same)
        if same.item() != world * key:
            sys.exit(f"rank {rank}: ranks ran different plans at iteration {it}")
        # A number's sum over the ranks: 1 + 2 + ... + world, plus each rank's part of a loss.
        part = ((h.detach() - t_all[mine]) ** 2).sum() / (world * TOKENS)
        total = hecate.global_sum(part)
        want = ((r.detach() - t_all) ** 2).sum().item() / (world * TOKENS)
        if abs(total - want) > 1e-9 * max(1.0, abs(want)):
            sys.exit(f"rank {rank}: global_sum of the loss {total}, the loss is {want}")
        if hecate.global_sum(rank + 1) != world * (world + 1) / 2:
            sys.exit(f"rank {rank}: global_sum({rank + 1}) is not {world * (world + 1) / 2}")
        # Updates: experts by Adam (the layer's and ours), gates by plain SGD on both sides.
        hecate.step(lr=LR, betas=(B1, B2), eps=EPS)
        with torch.no_grad():
            for l, m in enumerate(moes):
                m.gate.weight -= 0.05 * m.gate.weight.grad
                m.gate.weight.grad = None
                gates[l] -= 0.05 * gates[l].grad
                gates[l].grad = None
                for e in range(E):
                    p, (mm, vv) = experts[l][e], adam[l][e]
                    mm.mul_(B1).add_(p.grad, alpha=1 - B1)
                    vv.mul_(B2).addcmul_(p.grad, p.grad, value=1 - B2)
                    p -= LR * (mm / (1 - B1 ** (it + 1))) / ((vv / (1 - B2 ** (it + 1))).sqrt() + EPS)
                    p.grad = None
    spag = torch.tensor([float(hecate.bytes_sent()["sparse_all_gather"])], dtype=torch.float64)
    hecate.all_reduce_(spag)
    if rank == 0:
        print(f"spag bytes {int(spag.item())}")
        print(f"plan versions {versions}")
        print(f"plan epochs {epochs}")
        print(f"copies {copies}")
        print(f"OK {world} ranks, {ITERATIONS} iterations")
    hecate.shutdown()


if __name__ == "__main__":
    main()
