#!/usr/bin/python3
"""A small GPT-MoE written in plain PyTorch whose MoE layers are hecate.torch.MoE, trained on a
text file byte by byte. Run it under torchrun (with a controller: HECATE_CONTROLLER=host:port):

    python3 -m torch.distributed.run --nproc_per_node=4 --redirects=1 --tee=1 \\
        examples/torch/train_gpt_moe.py --iterations=40

or `./hecate run --frontend=python`, which starts a controller and torchrun for you. Rank 0
prints a progress row every --log-every iterations and a summary at the end.
"""
import argparse
import math
import os
import statistics
import sys
import time

import torch

import hecate
import hecate.torch as ht


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iterations", type=int, default=60)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--d-ffn", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--batch", type=int, default=8, help="sequences per rank per iteration")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--policy", default="hecate", help="the local planner's policy")
    p.add_argument("--log-every", type=int, default=5)
    p.add_argument("--data", default="/usr/share/games/fortunes/fortunes")
    # What the planners assume about this hardware: hecate-worker's flags, with its defaults.
    p.add_argument("--attention-ms", type=float, default=0.5,
                   help="attention forward time per block the planners assume, ms")
    p.add_argument("--device-gflops", type=float, default=20.0,
                   help="expert FLOP rate the planners assume, GFLOP/s")
    p.add_argument("--link-gbytes", type=float, default=2.0,
                   help="link bandwidth the planners assume, GB/s")
    p.add_argument("--copy-overhead-ms", type=float, default=0.0,
                   help="fixed compute an expert copy costs its holder per iteration, ms")
    p.add_argument("--reshard-period", type=int, default=100,
                   help="iterations between the local planner's re-shardings (0: never)")
    p.add_argument("--pin", action="store_true",
                   help="pin local rank r to the r-th available core (as hecate run pins: "
                        "hecate.init(cpu=...))")
    a = p.parse_args()
    for name in ("iterations", "layers", "d_model", "heads", "experts", "top_k", "d_ffn",
                 "seq_len", "batch", "log_every"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.d_model % a.heads:
        p.error("--d-model must be a multiple of --heads")
    if a.top_k > a.experts:
        p.error("--top-k must be at most --experts")
    return a


class Block(torch.nn.Module):
    def __init__(self, a):
        super().__init__()
        self.heads = a.heads
        self.ln1 = torch.nn.LayerNorm(a.d_model)
        self.qkv = torch.nn.Linear(a.d_model, 3 * a.d_model)
        self.proj = torch.nn.Linear(a.d_model, a.d_model)
        self.ln2 = torch.nn.LayerNorm(a.d_model)
        self.moe = ht.MoE(a.d_model, a.d_ffn, a.experts, a.top_k, seed=a.seed)

    def forward(self, h, mask):
        b, s, d = h.shape
        # q, k and v, each [b, heads, s, d / heads]: views of qkv's output
        q, k, v = self.qkv(self.ln1(h)).view(b, s, 3, self.heads, d // self.heads).permute(
            2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads) + mask, dim=-1)
        h = h + self.proj((att @ v).transpose(1, 2).reshape(b, s, d))
        return h + self.moe(self.ln2(h))


class GptMoE(torch.nn.Module):
    def __init__(self, a):
        super().__init__()
        self.tok = torch.nn.Embedding(256, a.d_model)
        self.pos = torch.nn.Embedding(a.seq_len, a.d_model)
        self.blocks = torch.nn.ModuleList(Block(a) for _ in range(a.layers))
        self.lnf = torch.nn.LayerNorm(a.d_model)
        self.head = torch.nn.Linear(a.d_model, 256)
        mask = torch.full((a.seq_len, a.seq_len), float("-inf")).triu(1)
        self.register_buffer("mask", mask)

    def forward(self, x):
        h = self.tok(x) + self.pos(torch.arange(x.shape[1]))
        for block in self.blocks:
            h = block(h, self.mask)
        return self.head(self.lnf(h))


_MASK64 = (1 << 64) - 1


def _mix(x):
    """SplitMix64's finalizer: the C++ trainer's (worker/model/trainer.cc) sequence starts."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class Batches:
    """This rank's sequences, iteration by iteration, chosen as hecate-worker chooses them (the
    same seed gives the same batches, so both train the same model on the same data). Like a
    sampler, it draws the positions ahead, a thousand iterations at a time."""

    AHEAD = 1000

    def __init__(self, text, a, rank, world):
        self.text, self.a, self.rank, self.world = text, a, rank, world
        self.offsets = torch.arange(a.seq_len + 1)
        self.first, self.starts = 0, torch.zeros(0, a.batch, 1, dtype=torch.long)

    def get(self, iteration):
        """(input, target) for `iteration`, each [batch, seq_len]."""
        a, k = self.a, iteration - self.first
        if not 0 <= k < len(self.starts):
            span = len(self.text) - a.seq_len - 1
            self.first, k = iteration, 0
            self.starts = torch.tensor([
                [_mix(a.seed * 7919 + (it * self.world + self.rank) * a.batch + b) % span
                 for b in range(a.batch)]
                for it in range(iteration, iteration + self.AHEAD)]).unsqueeze(-1)
        rows = self.text[self.starts[k] + self.offsets].long()
        return rows[:, :-1], rows[:, 1:]


def main():
    a = parse_args()
    try:
        with open(a.data, "rb") as f:
            text = torch.tensor(list(f.read()), dtype=torch.uint8)
    except OSError as e:
        sys.exit(f"train_gpt_moe: cannot read --data {a.data}: {e.strerror} "
                 "(scripts/setup.sh installs Debian's fortunes)")
    if len(text) < a.seq_len + 2:
        sys.exit(f"train_gpt_moe: --data {a.data} has {len(text)} bytes; need {a.seq_len + 2}")
    try:
        cpu = None
        if a.pin:
            cores = sorted(os.sched_getaffinity(0))
            cpu = cores[int(os.environ.get("LOCAL_RANK", "0")) % len(cores)]
        hecate.init(policy=a.policy, attention_ms=a.attention_ms, device_gflops=a.device_gflops,
                    link_gbytes=a.link_gbytes, copy_overhead_ms=a.copy_overhead_ms,
                    reshard_period=a.reshard_period, cpu=cpu)
    except ValueError as e:
        sys.exit(f"train_gpt_moe: {e}")
    info = hecate.plan_info()
    rank, world = info["rank"], info["world_size"]
    torch.manual_seed(a.seed)  # the same dense initialization on every rank
    model = GptMoE(a)
    # Dense parameters: the C++ worker's Adam (torch.optim.Adam's update in one pass a tensor).
    opt = ht.Adam(model.parameters(), lr=a.lr)
    # The dense gradients live in one flat buffer (each parameter's .grad a view of it, as DDP's
    # gradient_as_bucket_view): backward writes into it and one all-reduce sums it.
    params = list(model.parameters())
    grads = torch.zeros(sum(p.numel() for p in params))
    offset = 0
    for p in params:
        p.grad = grads[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
    global_tokens = world * a.batch * a.seq_len
    batches = Batches(text, a, rank, world)
    if rank == 0:
        print(f"train_gpt_moe: {world} ranks, {a.layers} MoE layers x {a.experts} experts "
              f"(top-{a.top_k}), {global_tokens} tokens an iteration, "
              f"controller {os.environ.get('HECATE_CONTROLLER') or 'none (local planning)'}")
        print(f"{'iter':>6} {'loss':>8} {'tokens/s':>10} {'step_ms':>8} {'plan':>8} {'copies':>6}")
    losses, steps, plans, phases = [], [], [], []
    for it in range(a.iterations):
        t0 = time.perf_counter()
        x, y = batches.get(it)
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), y.reshape(-1),
                                                 reduction="sum") / global_tokens
        grads.zero_()
        loss.backward()
        hecate.all_reduce_(grads)  # dense gradients: summed over the ranks
        total = hecate.global_sum(loss)  # the global batch's loss, for the log
        opt.step()
        hecate.step(lr=a.lr)
        steps.append(time.perf_counter() - t0)
        losses.append(total)
        info = hecate.plan_info()
        plans.append((info["epoch"], info["version"]))
        phases.append(hecate.phase_times())
        if rank == 0 and (it % a.log_every == 0 or it == a.iterations - 1):
            print(f"{it:>6} {total:>8.4f} {global_tokens / steps[-1]:>10.0f} "
                  f"{steps[-1] * 1e3:>8.1f} {info['epoch']:>3}.{info['version']:<4} "
                  f"{info['copies']:>6}", flush=True)
    if rank == 0:
        median = statistics.median(steps)
        print(f"\nsummary: {a.iterations} iterations, loss {losses[0]:.4f} -> {losses[-1]:.4f}, "
              f"step {median * 1e3:.1f} ms median, {global_tokens / median:.0f} tokens/s, "
              f"{len(set(plans)) - 1} plan switches (final {plans[-1][0]}.{plans[-1][1]})")
        print("MoE layers, ms a step (median): " + ", ".join(
            f"{name} {statistics.median(p[name] for p in phases):.2f}" for name in phases[0]))
    hecate.shutdown()


if __name__ == "__main__":
    main()
