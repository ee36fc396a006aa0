"""hecate.torch.MoE: an nn.Module whose experts run on Hecate's FSSDP MoE layer."""
import torch

from hecate import _C


class MoE(torch.nn.Module):
    """Top-k softmax gate (weights renormalized over the chosen experts) and GELU expert FFNs.

    forward(x) takes [..., d_model] and returns the same shape. The gate is an ordinary PyTorch
    parameter (the user's optimizer steps it); the experts' parameters and Adam state live in the
    layer, which step() updates after backward.
    """

    def __init__(self, d_model, d_ffn, num_experts, top_k, layer=0, seed=1,
                 dtype=torch.float32):
        super().__init__()
        if dtype not in (torch.float32, torch.float64):
            raise ValueError("MoE: dtype must be torch.float32 or torch.float64")
        self.d_model, self.top_k = d_model, top_k
        self.gate = torch.nn.Linear(d_model, num_experts, bias=False, dtype=dtype)
        self._layer = _C.Layer(layer, d_model, d_ffn, num_experts, top_k, seed,
                               dtype == torch.float64)

    def forward(self, x):
        shape = x.shape
        z = x.reshape(-1, self.d_model)
        probs = torch.softmax(self.gate(z), dim=-1)
        top_w, top_i = probs.topk(self.top_k, dim=-1)
        top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        return self._layer.forward(z, top_i, top_w).reshape(shape)

    def step(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        """After backward: Adam on the experts, and the next iteration begins."""
        self._layer.step(lr, betas[0], betas[1], eps)

    def expert_parameters(self, e):
        """Expert e's parameters, flat: W1 [d_model x d_ffn] then W2 [d_ffn x d_model]."""
        return self._layer.param(e)

    def expert_grad(self, e):
        return self._layer.grad(e)
