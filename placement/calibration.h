// Calibration (paper section 4.2, docs/placement.md "Calibration"): after the gate, every rank
// adjusts the agreed plan's layer to the iteration's actual counts -- copies into free memory,
// then swaps of planned copies -- when the cost model says the adjustment, its late gather
// included, pays. Every rank computes the same answer from the same all-gathered counts.
// Pure functions; thread-safe.
#ifndef HECATE_PLACEMENT_CALIBRATION_H_
#define HECATE_PLACEMENT_CALIBRATION_H_

#include <cstdint>
#include <vector>

#include "placement/cost_model.h"
#include "placement/load.h"
#include "placement/plan.h"

namespace hecate::placement {

// The swap stage's defaults: 128 layer evaluations at paper scale (32 devices x 64 experts);
// none at DeepSeek-V3 scale (256 x 256: 4), where fewer than kMinCalibrationEvaluations remain.
inline constexpr int64_t kCalibrationCellBudget = int64_t{128} * 32 * 64;
inline constexpr int64_t kMinCalibrationEvaluations = 8;

struct CalibrationOptions {
  // The swap stage: while the layer is over `target` x mean device tokens on the actual counts, a
  // copy of one of the busiest device's experts replaces the least useful copy (fewest tokens
  // per holder) of a light device -- its slot reused, the new copy gathered after the gate --
  // whenever that takes tokens off the devices over the target and the layer, late gather
  // included, is not slower than before calibration. It may spend `swap_cell_budget` device x
  // expert cells (one layer evaluation costs devices x experts); fewer than
  // kMinCalibrationEvaluations evaluations: no swap stage. 0: none (the paper's calibration,
  // copies into free memory only).
  int64_t swap_cell_budget = kCalibrationCellBudget;
  double target = 1.06;
  // Receivers tried per expert: the least loaded devices of the busy device's node, then as
  // many on other nodes.
  int candidates = 2;
};

struct CalibrationResult {
  bool accepted = false;
  LayerPlan layer;  // the calibrated layer when accepted, else the input layer
  // Predicted layer time on the actual counts, current holders (0 when there was nothing to try:
  // no free memory and no swap budget).
  double before_seconds = 0;
  double after_seconds = 0;       // predicted layer time with the extra copies, their spAG included
  double extra_spag_seconds = 0;  // the extra, unhidden spAG on the critical path
  int64_t extra_spag_bytes = 0;   // and its bytes
  int copies_added = 0;           // copies gathered after the gate (swaps included)
  int copies_dropped = 0;         // planned copies given up for them
  int64_t evaluations = 0;
};

// The copies `calibrated` holds that `planned` does not, as a layer plan of its own (owners plus
// those copies): what calibration gathers after the gate.
LayerPlan LateCopies(const LayerPlan& planned, const LayerPlan& calibrated);

// Calibration (paper §4.2): after the gate, re-run materialization on this iteration's actual
// counts with the memory that remains (`remaining_copies[d]` extra copies per device), then the
// swap stage (`options`); accept only when predicted layer time + the extra, unhidden spAG time
// is lower than without it (docs/placement.md "Calibration"). Never exceeds the plan's copies +
// `remaining_copies` on a device, never two copies on one device, never drops an owner.
// Deterministic: every rank computes the same answer from the same all-gathered counts.
CalibrationResult Calibrate(const CostModel& cost, LayerId l, const LayerPlan& current,
                            const LoadMatrix& actual, const std::vector<int>& remaining_copies,
                            DispatchRule rule, const CalibrationOptions& options = {});

// How a worker calibrates, as it registers it with the controller (so the controller judges plans
// the way the workers run them): whether at all, the free memory it may fill, and the swaps.
struct CalibrationRule {
  bool enabled = true;
  // Copies per device and layer calibration may add beyond the plan's.
  int free_copies = 0;
  // When >= 0, instead: a device may hold at most this many non-owner copies in all (plan's and
  // calibration's), e.g. an equal-memory comparison's extra slots.
  int copy_cap = -1;
  CalibrationOptions options;

  // The extra copies device d may take in `layer` under this rule.
  std::vector<int> FreeCopies(const LayerPlan& layer, int num_devices) const;
};

// Calibrate() with the rule's free memory and options (the rule's `enabled` is the caller's to
// check).
CalibrationResult CalibrateLayer(const CostModel& cost, LayerId l, const LayerPlan& current,
                                 const LoadMatrix& actual, DispatchRule rule,
                                 const CalibrationRule& calibration);

}  // namespace hecate::placement

#endif  // HECATE_PLACEMENT_CALIBRATION_H_
