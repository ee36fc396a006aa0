#!/usr/bin/python3
"""Plots for //bench:paper: reads the CSVs in DIR, writes PNGs next to them."""
import csv
import sys
from collections import defaultdict

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def main(out):
    # The trainer-fitted workload; the other workloads are in the CSV and the page's tables.
    data = [r for r in rows(f"{out}/fig9_10_speedup.csv") if r["workload"] == "trainer"]
    setups = sorted({(r["cluster"], r["gpus"]) for r in data})
    policies = ["fastermoe", "smartmoe", "flexmoe", "eplb", "eplb-10", "hecate-paper", "hecate",
                "hecate-rm"]
    fig, axes = plt.subplots(1, len(setups), figsize=(5 * len(setups), 4), sharey=True)
    for ax, (cluster, gpus) in zip(axes, setups):
        models = sorted({r["model"] for r in data if r["cluster"] == cluster and r["gpus"] == gpus})
        width = 0.8 / len(policies)
        for i, p in enumerate(policies):
            ys = [next(float(r["speedup_vs_ep"]) for r in data if r["cluster"] == cluster and
                       r["gpus"] == gpus and r["model"] == m and r["policy"] == p) for m in models]
            ax.bar([j + i * width for j in range(len(models))], ys, width, label=p)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks([j + 0.4 for j in range(len(models))])
        ax.set_xticklabels(models, rotation=20, fontsize=8)
        ax.set_title(f"{cluster}, {gpus} GPUs (trainer workload)")
    axes[0].set_ylabel("speedup over EP")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{out}/fig9_10_speedup.png", dpi=110)

    br = rows(f"{out}/fig12_breakdown.csv")
    comps = ["attention_ms", "all_to_all_ms", "expert_ms", "exposed_sparse_ms", "migration_ms"]
    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = [0.0] * len(br)
    for c in comps:
        vals = [float(r[c]) for r in br]
        ax.bar([r["policy"] for r in br], vals, bottom=bottom, label=c.replace("_ms", ""))
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel("ms / iteration")
    ax.set_title("BERT-MoE-Deep, Cluster B, 32 GPUs")
    ax.legend(fontsize=8)
    plt.xticks(rotation=20)
    fig.tight_layout()
    fig.savefig(f"{out}/fig12_breakdown.png", dpi=110)

    mem = rows(f"{out}/fig13_memory.csv")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar([r["policy"] for r in mem], [float(r["peak_moe_memory_gib"]) for r in mem])
    ax.set_ylabel("peak MoE memory per device, GiB")
    plt.xticks(rotation=20)
    fig.tight_layout()
    fig.savefig(f"{out}/fig13_memory.png", dpi=110)

    ab = [r for r in rows(f"{out}/fig15_ablation.csv") if r["workload"] == "trainer"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    base = [r for r in ab if r["variant"] != "both-interval"]
    a1.bar([r["variant"] for r in base], [float(r["speedup_vs_ep"]) for r in base])
    a1.set_ylabel("speedup over EP")
    iv = [r for r in ab if r["variant"] == "both-interval"]
    a2.plot([int(r["reshard_period"]) for r in iv], [float(r["speedup_vs_ep"]) for r in iv], "o-")
    a2.set_xlabel("re-shard interval (iterations)")
    fig.tight_layout()
    fig.savefig(f"{out}/fig15_ablation.png", dpi=110)

    try:
        sc = rows(f"{out}/scale_out.csv")
    except FileNotFoundError:
        sc = []
    if sc:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        groups = defaultdict(dict)
        for r in sc:
            groups[r["devices"]][r["policy"]] = float(r["speedup_vs_ep"])
        devs = sorted(groups, key=int)
        pols = list(groups[devs[0]].keys())
        width = 0.8 / len(pols)
        for i, p in enumerate(pols):
            ax.bar([j + i * width for j in range(len(devs))], [groups[d][p] for d in devs], width,
                   label=p)
        ax.set_xticks([j + 0.4 for j in range(len(devs))])
        ax.set_xticklabels([f"{d} H100" for d in devs])
        ax.set_ylabel("speedup over EP")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(f"{out}/scale_out.png", dpi=110)


if __name__ == "__main__":
    main(sys.argv[1])
