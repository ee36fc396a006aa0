#include "worker/comm/gloo/gloo_communicator.h"

#include <csignal>

#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/alltoallv.h>
#include <gloo/barrier.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstring>
#include <exception>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace hecate::worker {

namespace {

// gloo::rendezvous::Store over c10d's TCP store (Gloo has no TCP store of its own).
class TcpStoreAdapter : public gloo::rendezvous::Store {
 public:
  explicit TcpStoreAdapter(c10::intrusive_ptr<c10d::TCPStore> store) : store_(std::move(store)) {}
  void set(const std::string& key, const std::vector<char>& data) override {
    store_->set(key, std::vector<uint8_t>(data.begin(), data.end()));
  }
  std::vector<char> get(const std::string& key) override {
    std::vector<uint8_t> v = store_->get(key);
    return std::vector<char>(v.begin(), v.end());
  }
  void wait(const std::vector<std::string>& keys) override { store_->wait(keys); }
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override {
    store_->wait(keys, timeout);
  }

 private:
  c10::intrusive_ptr<c10d::TCPStore> store_;
};

absl::Status FromException(const std::exception& e, int rank, const char* what) {
  const std::string msg = absl::StrCat("rank ", rank, ": ", what, ": ", e.what());
  if (absl::StrContains(e.what(), "imed out") || absl::StrContains(e.what(), "Timed out") ||
      absl::StrContains(e.what(), "timeout")) {
    return absl::DeadlineExceededError(msg);
  }
  return absl::UnavailableError(msg);
}

class GlooCommunicator : public Communicator {
 public:
  GlooCommunicator(c10::intrusive_ptr<c10d::TCPStore> store,
                   std::shared_ptr<gloo::transport::Device> device,
                   std::shared_ptr<gloo::rendezvous::Context> ctx, std::string prefix,
                   std::chrono::milliseconds timeout,
                   std::shared_ptr<CommCounters> counters = nullptr)
      : store_(std::move(store)),
        device_(std::move(device)),
        ctx_(std::move(ctx)),
        prefix_(std::move(prefix)),
        timeout_(timeout) {
    if (counters != nullptr) counters_ = std::move(counters);
  }

  // A full mesh of its own over the same store and device, under the prefix "<prefix>/lane<k>":
  // every rank's k-th lane meets the others' k-th.
  absl::StatusOr<std::unique_ptr<Communicator>> CreateLane() override {
    const std::string prefix = absl::StrCat(prefix_, "/lane", ++lanes_);
    try {
      auto adapter = std::make_shared<TcpStoreAdapter>(store_);
      gloo::rendezvous::PrefixStore prefixed(prefix, *adapter);
      auto ctx = std::make_shared<gloo::rendezvous::Context>(rank(), world_size());
      ctx->setTimeout(timeout_);
      ctx->connectFullMesh(prefixed, device_);
      return std::unique_ptr<Communicator>(
          new GlooCommunicator(store_, device_, std::move(ctx), prefix, timeout_, counters_));
    } catch (const std::exception& e) {
      return FromException(e, rank(), "connecting a lane");
    }
  }

  int rank() const override { return ctx_->rank; }
  int world_size() const override { return ctx_->size; }

  absl::Status AllToAllV(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                         const std::vector<int64_t>& recv_counts, int element_bytes,
                         CommKind kind) override {
    try {
      std::vector<int64_t> in(send_counts.size()), out(recv_counts.size());
      int64_t sent = 0, received = 0, in_total = 0, out_total = 0;
      for (size_t i = 0; i < in.size(); ++i) {
        in[i] = send_counts[i] * element_bytes;
        out[i] = recv_counts[i] * element_bytes;
        in_total += in[i];
        out_total += out[i];
        if (static_cast<int>(i) != rank()) {
          sent += in[i];
          received += out[i];
        }
      }
      // Gloo needs valid pointers even for empty buffers.
      char dummy_in = 0, dummy_out = 0;
      gloo::AlltoallvOptions opts(ctx_);
      opts.setInput<char>(in_total ? static_cast<char*>(const_cast<void*>(send)) : &dummy_in, in);
      opts.setOutput<char>(out_total ? static_cast<char*>(recv) : &dummy_out, out);
      opts.setTag(NextTag());
      opts.setTimeout(timeout_);
      gloo::alltoallv(opts);
      counters_->Add(kind, sent, received);
      return absl::OkStatus();
    } catch (const std::exception& e) {
      return FromException(e, rank(), "all-to-all");
    }
  }

  absl::Status AllReduceSum(void* data, int64_t elements, int element_bytes,
                            CommKind kind) override {
    if (elements == 0) return absl::OkStatus();
    try {
      gloo::AllreduceOptions opts(ctx_);
      if (element_bytes == 8) {
        opts.setOutput(static_cast<double*>(data), elements);
        opts.setReduceFunction(
            static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<double>));
      } else {
        opts.setOutput(static_cast<float*>(data), elements);
        opts.setReduceFunction(
            static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
      }
      opts.setTag(NextTag());
      opts.setTimeout(timeout_);
      gloo::allreduce(opts);
      // Ring all-reduce: each rank sends and receives 2(n-1)/n of the buffer.
      const int n = world_size();
      const int64_t moved = n > 1 ? 2 * (n - 1) * elements * element_bytes / n : 0;
      counters_->Add(kind, moved, moved);
      return absl::OkStatus();
    } catch (const std::exception& e) {
      return FromException(e, rank(), "all-reduce");
    }
  }

  absl::Status AllGatherInt64(const int64_t* send, int64_t elements, int64_t* recv,
                              CommKind kind) override {
    try {
      gloo::AllgatherOptions opts(ctx_);
      opts.setInput(const_cast<int64_t*>(send), elements);
      opts.setOutput(recv, elements * world_size());
      opts.setTag(NextTag());
      opts.setTimeout(timeout_);
      gloo::allgather(opts);
      const int64_t bytes = elements * 8 * (world_size() - 1);
      counters_->Add(kind, bytes, bytes);
      return absl::OkStatus();
    } catch (const std::exception& e) {
      return FromException(e, rank(), "all-gather");
    }
  }

  absl::Status AllReduceMinInt64(int64_t* data, int64_t elements) override {
    std::vector<int64_t> all(elements * world_size());
    if (absl::Status s = AllGatherInt64(data, elements, all.data(), CommKind::kControl); !s.ok()) {
      return s;
    }
    for (int64_t i = 0; i < elements; ++i) {
      for (int r = 0; r < world_size(); ++r) data[i] = std::min(data[i], all[r * elements + i]);
    }
    return absl::OkStatus();
  }

  absl::Status Barrier() override {
    try {
      gloo::BarrierOptions opts(ctx_);
      opts.setTag(NextTag());
      opts.setTimeout(timeout_);
      gloo::barrier(opts);
      return absl::OkStatus();
    } catch (const std::exception& e) {
      return FromException(e, rank(), "barrier");
    }
  }

  absl::Status SendRecv(const std::vector<P2POp>& sends, const std::vector<P2POp>& recvs,
                        CommKind kind) override {
    try {
      std::vector<std::unique_ptr<gloo::transport::UnboundBuffer>> out, in;
      int64_t sent = 0, received = 0;
      char dummy = 0;
      for (const P2POp& op : sends) {
        out.push_back(ctx_->createUnboundBuffer(op.bytes ? op.data : &dummy, op.bytes));
        out.back()->send(op.peer, op.tag);
        sent += op.bytes;
      }
      for (const P2POp& op : recvs) {
        in.push_back(ctx_->createUnboundBuffer(op.bytes ? op.data : &dummy, op.bytes));
        in.back()->recv(op.peer, op.tag);
        received += op.bytes;
      }
      for (auto& b : in) {
        if (!b->waitRecv(timeout_)) return absl::DeadlineExceededError("receive timed out");
      }
      for (auto& b : out) {
        if (!b->waitSend(timeout_)) return absl::DeadlineExceededError("send timed out");
      }
      counters_->Add(kind, sent, received);
      return absl::OkStatus();
    } catch (const std::exception& e) {
      return FromException(e, rank(), "send/recv");
    }
  }

 private:
  uint32_t NextTag() { return tag_++ & 0x7fffffff; }

  c10::intrusive_ptr<c10d::TCPStore> store_;
  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::rendezvous::Context> ctx_;
  const std::string prefix_;
  std::chrono::milliseconds timeout_;
  int lanes_ = 0;
  uint32_t tag_ = 1;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(const GlooOptions& o) {
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", o.rank, " / world size ", o.world_size, " is not a valid group"));
  }
  std::signal(SIGPIPE, SIG_IGN);  // a dead peer is an error status, not a killed process
  const auto timeout = std::chrono::milliseconds(absl::ToInt64Milliseconds(o.timeout));
  try {
    c10d::TCPStoreOptions store_opts;
    store_opts.port = static_cast<uint16_t>(o.master_port);
    store_opts.isServer = o.rank == 0;
    store_opts.numWorkers = o.world_size;
    store_opts.waitWorkers = false;
    store_opts.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(o.master_addr, store_opts);
    auto adapter = std::make_shared<TcpStoreAdapter>(store);
    gloo::rendezvous::PrefixStore prefixed(o.prefix, *adapter);
    gloo::transport::tcp::attr attr;
    attr.hostname = o.hostname;
    auto device = gloo::transport::tcp::CreateDevice(attr);
    auto ctx = std::make_shared<gloo::rendezvous::Context>(o.rank, o.world_size);
    ctx->setTimeout(timeout);
    ctx->connectFullMesh(prefixed, device);
    return std::unique_ptr<Communicator>(
        new GlooCommunicator(store, device, ctx, o.prefix, timeout));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("rank ", o.rank, ": rendezvous at ", o.master_addr,
                                               ":", o.master_port, " failed: ", e.what()));
  }
}

}  // namespace hecate::worker
