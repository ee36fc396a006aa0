// `hecate-paper`: FSSDP with the paper's Alg. 1 as written (overlap degree t, memory slots m),
// even dispatch, copies kept until backward.
#include <algorithm>
#include <utility>

#include "placement/cost_model.h"
#include "placement/paper_materialization.h"
#include "placement/policy_support.h"

namespace hecate::placement::internal {

namespace {

class PaperPolicy : public Policy {
 public:
  std::string_view name() const override { return "hecate-paper"; }
  ReplicaSemantics semantics() const override { return ReplicaSemantics::kEphemeral; }

  Plan Compute(const PlanRequest& r) const override {
    const Owners owners = ResolveOwners(r);
    std::vector<LoadAggregate> aggregates;
    std::vector<std::vector<double>> loads;
    for (const LoadMatrix& m : *r.load) {
      aggregates.push_back(LoadAggregate::Of(m, *r.cluster));
      const std::vector<int64_t> totals = m.ExpertTotals();
      loads.emplace_back(totals.begin(), totals.end());
    }
    const CostModel cost(*r.cluster, *r.model, r.config.attention_forward_seconds);
    const std::vector<int> keep =
        CopyBudget(*r.cluster, *r.model, owners, ReplicaSemantics::kEphemeral, RematMode::kKeep,
                   r.config.extra_slots);
    const int m = *std::min_element(keep.begin(), keep.end());
    std::vector<LayerPlan> layers;
    for (LayerId l = 0; l < r.model->num_layers(); ++l) {
      const int t = OverlapDegree(*r.cluster, *r.model, l, cost.attention_forward_seconds());
      layers.push_back(MaterializePaper(*r.cluster, OwnersOnlyLayer(owners[l]), loads[l], t, m));
    }
    return Finish(r, name(), semantics(), DispatchRule::kEven, std::move(layers),
                  OwnerMigrations(r, owners), &aggregates);
  }
};

}  // namespace

std::unique_ptr<Policy> NewPaperPolicy() { return std::make_unique<PaperPolicy>(); }

}  // namespace hecate::placement::internal
