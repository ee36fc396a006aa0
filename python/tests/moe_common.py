"""Shared by the front end's tests: a plain PyTorch MoE (no Hecate code) and the skewed two-layer
model the multi-rank tests train on the global batch, each rank its slice."""
import torch

import hecate
import hecate.torch as ht

D, F, E, K, LAYERS, TOKENS = 8, 16, 8, 2, 2, 12


def reference_moe(x, gate_w, w1, w2, top_k):
    """Top-k softmax gate renormalized over the chosen experts; expert e is GELU(x w1[e]) w2[e]."""
    probs = torch.softmax(x @ gate_w.t(), dim=-1)
    top_w, top_i = probs.topk(top_k, dim=-1)
    top_w = top_w / top_w.sum(dim=-1, keepdim=True)
    y = torch.zeros_like(x)
    for e in range(len(w1)):
        hit = top_i.eq(e)
        rows = hit.any(dim=-1).nonzero().reshape(-1)
        if rows.numel() == 0:
            continue
        weight = (top_w * hit.to(top_w.dtype)).sum(dim=-1)[rows]
        out = torch.nn.functional.gelu(x[rows] @ w1[e]) @ w2[e]
        y = y.index_add(0, rows, out * weight.unsqueeze(-1))
    return y


def skewed_moes():
    """LAYERS float64 MoE layers whose gates send most tokens to expert 0 (the same on every
    rank: seeded)."""
    torch.manual_seed(0)
    moes = [ht.MoE(D, F, E, K, seed=5, dtype=torch.float64) for _ in range(LAYERS)]
    with torch.no_grad():
        for m in moes:
            m.gate.weight[0] += 1.5
    return moes


def global_batch(iteration, world):
    """Iteration's inputs and targets for all ranks, [world * TOKENS, D]."""
    g = torch.Generator().manual_seed(100 + iteration)
    x_all = torch.randn(world * TOKENS, D, generator=g, dtype=torch.float64)
    t_all = torch.randn(world * TOKENS, D, generator=g, dtype=torch.float64)
    return x_all, t_all


def forward_backward(moes, iteration, rank, world):
    """This rank's slice through the residual MoE stack and its part of the global-batch loss,
    backward, the gates' gradients summed over the ranks. Returns (x_all, t_all, h, loss)."""
    x_all, t_all = global_batch(iteration, world)
    mine = slice(rank * TOKENS, (rank + 1) * TOKENS)
    h = x_all[mine]
    for m in moes:
        h = h + m(h)
    loss = ((h - t_all[mine]) ** 2).sum().div(world * TOKENS)
    loss.backward()
    for m in moes:
        hecate.all_reduce_(m.gate.weight.grad)
    return x_all, t_all, h, loss
