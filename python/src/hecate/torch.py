"""hecate.torch: MoE, an nn.Module whose experts run on Hecate's FSSDP MoE layer, and Adam, the
C++ worker's Adam step for the dense parameters."""
import functools

import torch

from hecate import _C


class MoE(torch.nn.Module):
    """Top-k softmax gate (weights renormalized over the chosen experts) and GELU expert FFNs.

    forward(x) takes [..., d_model] and returns the same shape. The gate is an ordinary PyTorch
    parameter (the user's optimizer steps it; sum its gradient over the ranks like any dense
    parameter); the experts' parameters and Adam state live sharded in the layers, which
    hecate.step() updates after backward. Each rank's loss is its part of the global-batch loss
    (divide by the global token count): gradients are summed over the ranks, not averaged.
    """

    def __init__(self, d_model, d_ffn, num_experts, top_k, seed=1, dtype=torch.float32):
        super().__init__()
        if dtype not in (torch.float32, torch.float64):
            raise ValueError("MoE: dtype must be torch.float32 or torch.float64")
        self.d_model, self.top_k = d_model, top_k
        self._layer = _C.Layer(d_model, d_ffn, num_experts, top_k, seed, dtype == torch.float64)
        self.gate = torch.nn.Linear(d_model, num_experts, bias=False, dtype=dtype)

    def forward(self, x):
        # The gate runs in the extension (worker::TopKGate, the C++ trainer's router) on
        # self.gate's weight, so autograd reaches it as it would through self.gate(z); the
        # extension checks the shape (ValueError) and flattens the leading dimensions.
        return self._layer.forward(x, self.gate.weight)

    def owned_experts(self):
        """The experts whose parameters and Adam state this rank keeps under the plan in force."""
        return list(self._layer.owned_experts())

    def expert_parameters(self, e):
        """Owned expert e's parameters, flat: W1 [d_model x d_ffn] then W2 [d_ffn x d_model]."""
        return self._layer.param(e)

    def expert_grad(self, e):
        """Owned expert e's gradient: this rank's part after backward, the sum over the ranks
        after hecate.reduce_gradients()."""
        return self._layer.grad(e)


class Adam(torch.optim.Optimizer):
    """Adam for the dense parameters with the C++ worker's step (worker/fssdp/adam.h): one fused
    pass per contiguous float32 CPU parameter, where torch.optim.Adam makes about ten; tensor ops
    otherwise. The same update as torch.optim.Adam without weight decay, amsgrad or maximize, to
    float rounding, and the same state ("step", "exp_avg", "exp_avg_sq"): state dicts load into
    either. Not for the experts: hecate.step() steps those."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        if not lr >= 0.0:
            raise ValueError(f"hecate.torch.Adam: lr must be >= 0, got {lr}")
        if not eps >= 0.0:
            raise ValueError(f"hecate.torch.Adam: eps must be >= 0, got {eps}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"hecate.torch.Adam: betas must be two numbers in [0, 1), got {betas}")
        # torch.optim.Adam's own group options (theirs vary with the torch version), so that each
        # optimizer loads the other's state dict.
        theirs = torch.optim.Adam([torch.zeros(1, requires_grad=True)]).defaults
        super().__init__(params, dict(theirs, lr=lr, betas=tuple(betas), eps=eps))

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Every group's parameters in one call (the extension reads param_groups and state and
        # runs without autograd), checked before any moves.
        _C.adam_step_groups_(self.param_groups, self.state)
        return loss


def _profile_only_when_profiling(step):
    """Adam.step as torch.optim.Optimizer would wrap it before torch 2 (a profiler range named
    after the optimizer, and the marker call the profiler looks for), but entered only while a
    profiler runs: record_function costs about as much as a small model's whole update."""
    @functools.wraps(step)
    def wrapper(self, *args, **kwargs):
        if not torch.autograd._profiler_enabled():
            return step(self, *args, **kwargs)
        with torch.autograd.profiler.record_function(
                f"Optimizer.step#{type(self).__name__}.step"):
            out = step(self, *args, **kwargs)
            self._optimizer_step_code()
            return out

    wrapper.hooked = True  # Optimizer.__init__ leaves a step so marked alone
    return wrapper


# Before torch 2 the wrapper Optimizer.__init__ puts around step() only opens that profiler range;
# from torch 2 it also runs the step hooks (register_step_pre_hook, ...), so there it stays.
if int(torch.__version__.split(".")[0]) < 2:
    Adam.step = _profile_only_when_profiling(Adam.step)
