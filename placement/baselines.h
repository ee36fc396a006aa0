// Pieces of the baselines that the workers run themselves, as those systems do. Pure functions;
// thread-safe.
#ifndef HECATE_PLACEMENT_BASELINES_H_
#define HECATE_PLACEMENT_BASELINES_H_

#include "placement/cost_model.h"
#include "placement/dispatch.h"
#include "placement/load.h"
#include "placement/plan.h"

namespace hecate::placement {

// FasterMoE's shadowing decision for one layer (its global_policy): from `owners_only` (each
// expert held by its owner alone), broadcast the next-hottest expert of `load` to every device
// while the cost model's predicted layer time (shadow semantics, even dispatch) keeps falling, at
// most `max_shadows` experts; stop at the first non-improvement. FasterMoE decides after the gate,
// on the iteration's own counts: the `fastermoe` policy's plans for the simulator and the workers'
// shadow layers both come from here.
LayerPlan ShadowHotExperts(const CostModel& cost, LayerId l, LayerPlan owners_only,
                           const LoadMatrix& load, int max_shadows, Dispatcher* dispatcher);

}  // namespace hecate::placement

#endif  // HECATE_PLACEMENT_BASELINES_H_
