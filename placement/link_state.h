// Internal to the greedy (placement/greedy.cc): a sorted run of receivers, and the running link
// loads of one layer's spAG, kept incrementally so a candidate transfer is judged in O(1).
#ifndef HECATE_PLACEMENT_LINK_STATE_H_
#define HECATE_PLACEMENT_LINK_STATE_H_

#include <algorithm>
#include <vector>

#include "placement/cluster.h"

namespace hecate::placement::internal {

// A sorted run of devices inside a larger buffer (one candidate set of receivers).
struct DeviceSpan {
  const DeviceId* first = nullptr;
  int n = 0;
  const DeviceId* begin() const { return first; }
  const DeviceId* end() const { return first + n; }
  int size() const { return n; }
  bool empty() const { return n == 0; }
  DeviceId operator[](int i) const { return first[i]; }
};

// Running link loads of one layer's spAG (owner -> holder), mirroring TrafficMatrix::Seconds.
class LinkState {
 public:
  explicit LinkState(const Cluster& c)
      : c_(c),
        in_intra_(c.num_devices(), 0),
        out_intra_(c.num_devices(), 0),
        in_inter_(c.num_devices(), 0),
        out_inter_(c.num_devices(), 0),
        node_in_(c.num_nodes(), 0),
        node_out_(c.num_nodes(), 0) {}

  // Link time (without latency) after adding one transfer of `bytes` from -> to.
  double WithTransfer(DeviceId from, DeviceId to, double bytes) const {
    double t = worst_;
    if (c_.same_node(from, to)) {
      t = std::max(t, (out_intra_[from] + bytes) / c_.intra_bw());
      t = std::max(t, (in_intra_[to] + bytes) / c_.intra_bw());
    } else {
      t = std::max(t, (out_inter_[from] + bytes) / c_.device_nic_bw());
      t = std::max(t, (in_inter_[to] + bytes) / c_.device_nic_bw());
      t = std::max(t, (node_out_[c_.node_of(from)] + bytes) / c_.inter_bw());
      t = std::max(t, (node_in_[c_.node_of(to)] + bytes) / c_.inter_bw());
    }
    return t;
  }
  // Link time (without latency) after adding one transfer of `bytes` from `from` to each of `to`.
  double WithTransfers(DeviceId from, const DeviceSpan& to, double bytes) const {
    double t = worst_;
    double out_intra = out_intra_[from], out_inter = out_inter_[from];
    double node_out = node_out_[c_.node_of(from)];
    for (DeviceId d : to) {
      if (c_.same_node(from, d)) {
        out_intra += bytes;
        t = std::max(t, (in_intra_[d] + bytes) / c_.intra_bw());
      } else {
        out_inter += bytes;
        node_out += bytes;
        t = std::max(t, (in_inter_[d] + bytes) / c_.device_nic_bw());
      }
    }
    t = std::max(t, out_intra / c_.intra_bw());
    t = std::max(t, out_inter / c_.device_nic_bw());
    t = std::max(t, node_out / c_.inter_bw());
    // Receivers share one node in every call here; charge that node's NIC once per transfer.
    if (!to.empty() && !c_.same_node(from, to[0])) {
      t = std::max(t, (node_in_[c_.node_of(to[0])] + bytes * to.size()) / c_.inter_bw());
    }
    return t;
  }
  void Add(DeviceId from, DeviceId to, double bytes) {
    worst_ = WithTransfer(from, to, bytes);
    if (c_.same_node(from, to)) {
      out_intra_[from] += bytes;
      in_intra_[to] += bytes;
    } else {
      out_inter_[from] += bytes;
      in_inter_[to] += bytes;
      node_out_[c_.node_of(from)] += bytes;
      node_in_[c_.node_of(to)] += bytes;
    }
  }
  void Remove(DeviceId from, DeviceId to, double bytes) {
    // The busiest link stays the busiest unless this transfer uses (one of) the busiest.
    const bool rescan = Touched(from, to) >= worst_;
    if (c_.same_node(from, to)) {
      out_intra_[from] -= bytes;
      in_intra_[to] -= bytes;
    } else {
      out_inter_[from] -= bytes;
      in_inter_[to] -= bytes;
      node_out_[c_.node_of(from)] -= bytes;
      node_in_[c_.node_of(to)] -= bytes;
    }
    if (rescan) worst_ = WithoutTransfer(from, to, 0);
  }
  // Time of the busiest link a transfer from -> to uses.
  double Touched(DeviceId from, DeviceId to) const {
    return c_.same_node(from, to)
               ? std::max(out_intra_[from], in_intra_[to]) / c_.intra_bw()
               : std::max(std::max(out_inter_[from], in_inter_[to]) / c_.device_nic_bw(),
                          std::max(node_out_[c_.node_of(from)], node_in_[c_.node_of(to)]) /
                              c_.inter_bw());
  }
  // Link time (without latency) after removing one transfer of `bytes` from -> to. Unchanged unless
  // a link the transfer uses is (one of) the busiest; then a full scan.
  double WithoutTransfer(DeviceId from, DeviceId to, double bytes) const {
    const bool intra = c_.same_node(from, to);
    if (bytes > 0 && Touched(from, to) < worst_) return worst_;
    double t = 0;
    for (DeviceId d = 0; d < c_.num_devices(); ++d) {
      double oi = out_intra_[d], ii = in_intra_[d], oe = out_inter_[d], ie = in_inter_[d];
      if (d == from) (intra ? oi : oe) -= bytes;
      if (d == to) (intra ? ii : ie) -= bytes;
      t = std::max(
          t, std::max(std::max(oi, ii) / c_.intra_bw(), std::max(oe, ie) / c_.device_nic_bw()));
    }
    for (NodeId n = 0; n < c_.num_nodes(); ++n) {
      double no = node_out_[n], ni = node_in_[n];
      if (!intra && n == c_.node_of(from)) no -= bytes;
      if (!intra && n == c_.node_of(to)) ni -= bytes;
      t = std::max(t, std::max(no, ni) / c_.inter_bw());
    }
    return t;
  }
  double worst() const { return worst_; }

 private:
  const Cluster& c_;
  std::vector<double> in_intra_, out_intra_, in_inter_, out_inter_, node_in_, node_out_;
  double worst_ = 0;
};

}  // namespace hecate::placement::internal

#endif  // HECATE_PLACEMENT_LINK_STATE_H_
