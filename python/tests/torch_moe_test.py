"""hecate.torch.MoE against a plain PyTorch MoE written here (no Hecate code in the reference):
the forward, the input, gate and every expert gradient over iterations with Adam, in float64;
and the import refusing a torch whose version differs from the LibTorch hecate was built with."""
import os
import subprocess
import sys
import time
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
        with self.assertRaisesRegex(ValueError, "last dimension must be d_model=8"):
            moe(torch.randn(4, 6))
        with self.assertRaisesRegex(ValueError, r"gate \[4, 8\] expected, got \[3, 8\] and \[5, 8\]"):
            moe._layer.forward(torch.randn(3, 8), torch.randn(5, 8))
        self.assertEqual(hecate.plan_info()["policy"], "")  # refused before any plan was made
        moe(torch.randn(3, 8))
        with self.assertRaisesRegex(RuntimeError, "before the first forward"):
            ht.MoE(8, 16, 4, 2)

    def test_sums_over_the_ranks_take_what_they_can_sum(self):
        hecate.init()  # one rank: the sum is the value
        self.assertEqual(hecate.global_sum(2.5), 2.5)
        loss = (torch.ones(3, dtype=torch.float64, requires_grad=True) * 0.25).sum()
        self.assertEqual(hecate.global_sum(loss), 0.75)
        self.assertEqual(hecate.global_sum(torch.tensor([7])), 7.0)
        with self.assertRaisesRegex(ValueError, r"one-element tensor, got shape \[2\]"):
            hecate.global_sum(torch.zeros(2))
        t = torch.arange(4, dtype=torch.int64)
        with self.assertRaisesRegex(ValueError, "float32 or float64 tensor, got Long"):
            hecate.all_reduce_(t)
        self.assertTrue(torch.equal(t, torch.arange(4)))
        f = torch.arange(4, dtype=torch.float32)
        self.assertIs(hecate.all_reduce_(f), f)
        self.assertTrue(torch.equal(f, torch.arange(4, dtype=torch.float32)))

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
                                  "sprs", "sprs_exposed", "optimizer", "between_layers"})
        self.assertGreater(t["expert"], 0.0)
        self.assertGreater(t["optimizer"], 0.0)
        self.assertTrue(all(v >= 0 for v in t.values()), t)

    def test_between_layers_is_the_models_own_forward_between_moe_layers(self):
        hecate.init()
        layers = [ht.MoE(8, 32, 4, 2), ht.MoE(8, 32, 4, 2)]
        x, w = torch.randn(64, 8), torch.randn(128, 128)
        h = layers[0](x)
        t0 = time.perf_counter()
        for _ in range(100):  # the model's own work between the two layers
            w = torch.tanh(w @ w)
        work_ms = (time.perf_counter() - t0) * 1e3
        layers[1](h).sum().backward()
        hecate.step()
        self.assertGreaterEqual(hecate.phase_times()["between_layers"], work_ms)
        # The next step counts only its own gap.
        layers[1](layers[0](x)).sum().backward()
        hecate.step()
        self.assertLess(hecate.phase_times()["between_layers"], work_ms)

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

    def test_init_keeps_freed_memory_unless_told_not_to(self):
        # In a fresh process each: the setting is process-wide. After init(), malloc serves a
        # 16 MiB block from the heap (glibc's chunk header: bit 1 marks a block mmapped on its
        # own), as in hecate-worker; with keep_freed_memory=False, glibc's default mmaps it.
        code = ("import ctypes, sys, hecate\n"
                "hecate.init(keep_freed_memory=sys.argv[1] == 'keep')\n"
                "libc = ctypes.CDLL(None)\n"
                "libc.malloc.restype = ctypes.c_void_p\n"
                "libc.malloc.argtypes = [ctypes.c_size_t]\n"
                "block = libc.malloc(16 << 20)\n"
                "print('mmapped' if ctypes.c_size_t.from_address(block - 8).value & 2 else 'heap')\n"
                "hecate.shutdown()\n")
        for arg, want in (("keep", "heap"), ("leave", "mmapped")):
            out = subprocess.run([sys.executable, "-c", code, arg], capture_output=True,
                                 text=True, env=dict(os.environ), check=True).stdout
            self.assertEqual(out.strip(), want, arg)


class AdamTest(unittest.TestCase):
    """hecate.torch.Adam against torch.optim.Adam: the same update and state."""

    @staticmethod
    def _model(dtype):
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(40, 33), torch.nn.LayerNorm(33),
                                   torch.nn.Linear(33, 7, bias=False)).to(dtype)

    def _train(self, model, opt, steps, seed=1):
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            x = torch.randn(16, 40, generator=g, dtype=next(model.parameters()).dtype)
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()

    def test_same_updates_and_state_as_torch_adam(self):
        # float32 takes the fused pass, float64 the tensor ops.
        for dtype, tol in ((torch.float32, 1e-6), (torch.float64, 1e-12)):
            ours, theirs = self._model(dtype), self._model(dtype)
            start = [p.detach().clone() for p in ours.parameters()]
            kw = dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-7)
            a = ht.Adam(ours.parameters(), **kw)
            b = torch.optim.Adam(theirs.parameters(), **kw)
            self._train(ours, a, 6)
            self._train(theirs, b, 6)
            for p, q, p0 in zip(ours.parameters(), theirs.parameters(), start):
                self.assertGreater((p - p0).abs().max().item(), 1e-3)  # it moved
                self.assertLess((p - q).abs().max().item(), tol, dtype)
            for p, q in zip(ours.parameters(), theirs.parameters()):
                sa, sb = a.state[p], b.state[q]
                self.assertEqual(int(sa["step"]), int(sb["step"]))
                self.assertLess((sa["exp_avg"] - sb["exp_avg"]).abs().max().item(), tol)
                self.assertLess((sa["exp_avg_sq"] - sb["exp_avg_sq"]).abs().max().item(), tol)

    def test_parameter_groups_keep_their_own_hyperparameters(self):
        ours, theirs = self._model(torch.float32), self._model(torch.float32)

        def groups(m):
            p = list(m.parameters())
            return [dict(params=p[:2], lr=3e-2, betas=(0.5, 0.9)), dict(params=p[2:], eps=1e-3)]

        a = ht.Adam(groups(ours), lr=1e-2)
        b = torch.optim.Adam(groups(theirs), lr=1e-2)
        self._train(ours, a, 4)
        self._train(theirs, b, 4)
        for p, q in zip(ours.parameters(), theirs.parameters()):
            self.assertLess((p - q).abs().max().item(), 1e-6)
        # A bad state in the second group: the first group's parameters do not move either.
        before = [p.detach().clone() for p in ours.parameters()]
        a.state[list(ours.parameters())[-1]]["exp_avg_sq"] = torch.zeros(2)
        with self.assertRaisesRegex(ValueError, "parameter 4"):
            a.step()
        for p, p0 in zip(ours.parameters(), before):
            self.assertTrue(torch.equal(p, p0))

    def test_parameters_without_a_gradient_keep_still_and_get_no_state(self):
        ours, theirs = self._model(torch.float32), self._model(torch.float32)
        for m in (ours, theirs):
            m[1].weight.requires_grad_(False)  # no gradient: skipped, as torch.optim.Adam skips it
        a = ht.Adam(ours.parameters(), lr=1e-2)
        b = torch.optim.Adam(theirs.parameters(), lr=1e-2)
        frozen = ours[1].weight.detach().clone()
        self._train(ours, a, 3)
        self._train(theirs, b, 3)
        self.assertTrue(torch.equal(ours[1].weight, frozen))
        self.assertNotIn(ours[1].weight, a.state)
        self.assertEqual(len(a.state), len(b.state))
        for p, q in zip(ours.parameters(), theirs.parameters()):
            self.assertLess((p - q).abs().max().item(), 1e-6)

    def test_step_shows_in_the_profiler_under_torchs_name(self):
        model = self._model(torch.float32)
        opt = ht.Adam(model.parameters(), lr=1e-2)
        self._train(model, opt, 1)
        with torch.autograd.profiler.profile() as prof:
            self._train(model, opt, 1)
        names = {e.name for e in prof.function_events}
        self.assertIn("Optimizer.step#Adam.step", names)

    @unittest.skipIf(int(torch.__version__.split(".")[0]) >= 2,
                     "from torch 2 torch.optim's own step wrapper (with its hooks) stays")
    def test_no_profiler_range_is_opened_while_no_profiler_runs(self):
        model = self._model(torch.float32)
        opt = ht.Adam(model.parameters(), lr=1e-2)
        opened = []
        real = torch.autograd.profiler.record_function
        torch.autograd.profiler.record_function = lambda *a: opened.append(a) or real(*a)
        try:
            self._train(model, opt, 2)  # (zero_grad() opens torch.optim's own range)
            self.assertNotIn(("Optimizer.step#Adam.step",), opened)
            with torch.autograd.profiler.profile():
                self._train(model, opt, 1)
            self.assertIn(("Optimizer.step#Adam.step",), opened)
        finally:
            torch.autograd.profiler.record_function = real

    def test_state_dicts_load_into_either(self):
        ours, theirs = self._model(torch.float64), self._model(torch.float64)
        a = ht.Adam(ours.parameters(), lr=1e-2)
        self._train(ours, a, 3)
        theirs.load_state_dict(ours.state_dict())
        b = torch.optim.Adam(theirs.parameters(), lr=1e-2)
        b.load_state_dict(a.state_dict())
        self._train(ours, a, 3, seed=2)
        self._train(theirs, b, 3, seed=2)
        for p, q in zip(ours.parameters(), theirs.parameters()):
            self.assertLess((p - q).abs().max().item(), 1e-12)
        c = ht.Adam(ours.parameters(), lr=1e-2)
        c.load_state_dict(b.state_dict())  # torch's tensor step counts
        self._train(ours, c, 1, seed=3)
        self._train(theirs, b, 1, seed=3)
        for p, q in zip(ours.parameters(), theirs.parameters()):
            self.assertLess((p - q).abs().max().item(), 1e-12)

    def test_bad_input_is_a_clear_error_and_moves_nothing(self):
        model = self._model(torch.float32)
        for bad, name in ((dict(lr=-1.0), "lr"), (dict(eps=-1.0), "eps"),
                          (dict(betas=(0.9, 1.0)), "betas"), (dict(betas=(0.9,)), "betas")):
            with self.assertRaisesRegex(ValueError, name):
                ht.Adam(model.parameters(), **bad)
        opt = ht.Adam(model.parameters(), lr=1e-2)
        self._train(model, opt, 1)
        before = [p.detach().clone() for p in model.parameters()]
        last = list(model.parameters())[-1]
        opt.state[last]["exp_avg"] = torch.zeros(3)  # a state of the wrong shape
        with self.assertRaisesRegex(ValueError, "parameter 4.*shape"):
            opt.step()
        for p, p0 in zip(model.parameters(), before):
            self.assertTrue(torch.equal(p, p0))  # checked before any parameter moved
        opt.state[last]["exp_avg"] = torch.zeros_like(last)
        opt.state[last] = [1, 2]  # not a state at all
        with self.assertRaisesRegex(ValueError, "parameter 4: its state is not a dict"):
            opt.step()
        for p, p0 in zip(model.parameters(), before):
            self.assertTrue(torch.equal(p, p0))
        opt.state[last] = {}  # a fresh state, as torch.optim.Adam starts one
        opt.param_groups[0]["weight_decay"] = 0.1  # e.g. from a torch.optim.Adam state dict
        with self.assertRaisesRegex(ValueError, "weight_decay"):
            opt.step()
        for p, p0 in zip(model.parameters(), before):
            self.assertTrue(torch.equal(p, p0))


if __name__ == "__main__":
    unittest.main()
