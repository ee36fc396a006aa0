"""One rank of //python:checkpoint_test: two hecate.torch.MoE layers on the local planner's
changing plans; `full DIR` trains 12 iterations, saving a checkpoint (hecate.state_dict() and the
dense gates) after iteration 6 and every loss; `resume DIR` restores it in a new process group and
trains iterations 6..11, which must reproduce the saved losses (float64)."""
import os
import sys

import torch

import hecate
from moe_common import forward_backward, skewed_moes

ITERATIONS, SAVE_AT = 12, 6


def main():
    mode, directory = sys.argv[1], sys.argv[2]
    hecate.init()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    moes = skewed_moes()  # skewed routing: the plans put copies of expert 0 around
    start = 0
    if mode == "resume":
        state = torch.load(os.path.join(directory, f"ckpt.rank{rank}.pt"))
        hecate.load_state_dict(state["hecate"])
        with torch.no_grad():
            for m, w in zip(moes, state["gates"]):
                m.gate.weight.copy_(w)
        start = SAVE_AT
    losses = []
    for it in range(start, ITERATIONS):
        _, _, _, loss = forward_backward(moes, it, rank, world)
        hecate.step(lr=1e-2)
        with torch.no_grad():
            for m in moes:
                m.gate.weight -= 0.05 * m.gate.weight.grad
                m.gate.weight.grad = None
        losses.append(hecate.all_reduce_(loss.detach().reshape(1).clone()).item())
        if mode == "full" and it == SAVE_AT - 1:
            torch.save({"hecate": hecate.state_dict(),
                        "gates": [m.gate.weight.detach().clone() for m in moes]},
                       os.path.join(directory, f"ckpt.rank{rank}.pt"))
    info = hecate.plan_info()
    if rank == 0:
        with open(os.path.join(directory, f"{mode}.losses"), "w") as f:
            f.write("\n".join(repr(v) for v in losses) + "\n")
        print(f"{mode}: {len(losses)} iterations, final plan {info['epoch']}.{info['version']}, "
              f"copies {info['copies']}")
    hecate.shutdown()


if __name__ == "__main__":
    main()
