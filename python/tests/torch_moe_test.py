"""hecate.torch.MoE against a plain PyTorch MoE written here (no Hecate code in the reference):
the forward, the input, gate and every expert gradient over iterations with Adam, in float64;
and the import refusing a torch whose version differs from the LibTorch hecate was built with."""
import os
import subprocess
import sys
import unittest

import torch

import hecate
import hecate.torch as ht
from moe_common import reference_moe


def _C_initialized():
    from hecate import _C
    return _C.initialized()


class MoETest(unittest.TestCase):
    def tearDown(self):
        hecate.shutdown()

    def test_forward_and_every_gradient_equal_a_plain_pytorch_moe(self):
        torch.manual_seed(0)
        d, f, experts, k = 8, 16, 4, 2
        moe = ht.MoE(d, f, experts, k, seed=3, dtype=torch.float64)
        gate = moe.gate.weight.detach().clone().requires_grad_(True)
        w1, w2 = [], []  # the experts' initial values, readable once the first forward ran
        opt_h = torch.optim.SGD(moe.parameters(), lr=0.05)
        opt_r = torch.optim.SGD([gate], lr=0.05)
        lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-8
        for it in range(4):
            x = torch.randn(24, d, dtype=torch.float64)
            target = torch.randn(24, d, dtype=torch.float64)
            xh = x.clone().requires_grad_(True)
            xr = x.clone().requires_grad_(True)
            yh = moe(xh)
            if it == 0:
                self.assertEqual(moe.owned_experts(), list(range(experts)))
                for e in range(experts):
                    p = moe.expert_parameters(e)
                    w1.append(p[: d * f].view(d, f).clone().requires_grad_(True))
                    w2.append(p[d * f:].view(f, d).clone().requires_grad_(True))
                m = [[torch.zeros_like(t) for t in (w1[e], w2[e])] for e in range(experts)]
                v = [[torch.zeros_like(t) for t in (w1[e], w2[e])] for e in range(experts)]
            yr = reference_moe(xr, gate, w1, w2, k)
            torch.testing.assert_close(yh, yr, rtol=1e-10, atol=1e-12, msg=f"forward, it {it}")
            (yh * target).sum().backward()
            (yr * target).sum().backward()
            torch.testing.assert_close(xh.grad, xr.grad, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(moe.gate.weight.grad, gate.grad, rtol=1e-10, atol=1e-12)
            hecate.reduce_gradients()
            for e in range(experts):
                g = moe.expert_grad(e)
                want = torch.cat([w1[e].grad.reshape(-1), w2[e].grad.reshape(-1)])
                torch.testing.assert_close(g, want, rtol=1e-10, atol=1e-12,
                                           msg=f"expert {e}, it {it}")
            # Experts: Adam in the layer and here; the gate: the user's optimizer on both.
            hecate.step(lr=lr, betas=(b1, b2), eps=eps)
            opt_h.step()
            opt_r.step()
            opt_h.zero_grad()
            opt_r.zero_grad()
            with torch.no_grad():
                for e in range(experts):
                    for j, t in enumerate((w1[e], w2[e])):
                        m[e][j].mul_(b1).add_(t.grad, alpha=1 - b1)
                        v[e][j].mul_(b2).addcmul_(t.grad, t.grad, value=1 - b2)
                        mh = m[e][j] / (1 - b1 ** (it + 1))
                        vh = v[e][j] / (1 - b2 ** (it + 1))
                        t.sub_(lr * mh / (vh.sqrt() + eps))
                        t.grad = None
            for e in range(experts):
                want = torch.cat([w1[e].detach().reshape(-1), w2[e].detach().reshape(-1)])
                torch.testing.assert_close(moe.expert_parameters(e), want, rtol=1e-10,
                                           atol=1e-12)

    def test_a_mismatched_torch_is_a_clear_import_error(self):
        code = ("import torch; torch.__version__ = '2.1.0'\n"
                "try:\n    import hecate\nexcept ImportError as e:\n    print(e)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=dict(os.environ), check=True).stdout
        self.assertIn("hecate was built against LibTorch 1.13", out)
        self.assertIn("the running torch is 2.1.0", out)

    def test_bad_arguments_are_clear_errors(self):
        with self.assertRaisesRegex(ValueError, "top_k"):
            ht.MoE(8, 16, 4, 5)
        with self.assertRaisesRegex(ValueError, "unknown policy"):
            hecate.init(policy="nope")
        # The planner assumptions as hecate-worker checks its flags, each error naming its keyword;
        # a refused init leaves nothing behind (init works afterwards).
        for bad, name in ((dict(attention_ms=-1), "attention_ms"),
                          (dict(device_gflops=0), "device_gflops"),
                          (dict(link_gbytes=float("nan")), "link_gbytes"),
                          (dict(copy_overhead_ms=-0.5), "copy_overhead_ms"),
                          (dict(reshard_period=-1), "reshard_period"),
                          (dict(cpu=-2), "cpu"),
                          (dict(cpu=100000), "cpu")):
            with self.assertRaisesRegex(ValueError, name):
                hecate.init(**bad)
        affinity = os.sched_getaffinity(0)
        self.assertFalse(_C_initialized())
        self.assertEqual(os.sched_getaffinity(0), affinity)
        moe = ht.MoE(8, 16, 4, 2)
        moe(torch.randn(3, 8))
        with self.assertRaisesRegex(RuntimeError, "before the first forward"):
            ht.MoE(8, 16, 4, 2)

    def test_phase_times_report_the_last_step(self):
        torch.manual_seed(0)
        hecate.init()
        layers = [ht.MoE(8, 32, 4, 2), ht.MoE(8, 32, 4, 2)]
        self.assertEqual(hecate.phase_times()["expert"], 0.0)  # no step yet
        x = torch.randn(64, 8)
        y = layers[1](layers[0](x))
        y.sum().backward()
        hecate.step()
        t = hecate.phase_times()
        self.assertEqual(set(t), {"gate", "dispatch", "expert", "combine", "spag", "spag_exposed",
                                  "sprs", "sprs_exposed", "optimizer"})
        self.assertGreater(t["expert"], 0.0)
        self.assertGreater(t["optimizer"], 0.0)
        self.assertTrue(all(v >= 0 for v in t.values()), t)

    def test_cpu_pins_every_thread_of_the_process(self):
        core = sorted(os.sched_getaffinity(0))[-1]
        before = os.sched_getaffinity(0)
        try:
            hecate.init(cpu=core)
            tasks = os.listdir("/proc/self/task")
            self.assertGreater(len(tasks), 1)  # LibTorch's and the lane's threads, at least
            for tid in tasks:
                self.assertEqual(os.sched_getaffinity(int(tid)), {core}, tid)
            self.assertEqual(torch.get_num_threads(), 1)
        finally:
            os.sched_setaffinity(0, before)


if __name__ == "__main__":
    unittest.main()
