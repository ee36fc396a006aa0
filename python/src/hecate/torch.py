"""hecate.torch.MoE: an nn.Module whose experts run on Hecate's FSSDP MoE layer."""
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
        shape = x.shape
        z = x.reshape(-1, self.d_model)
        probs = torch.softmax(self.gate(z), dim=-1)
        top_w, top_i = probs.topk(self.top_k, dim=-1)
        top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        return self._layer.forward(z, top_i, top_w).reshape(shape)

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
