"""CUDA-only targets: built under --config=cuda, skipped by `bazel build //...` otherwise."""

# `target_compatible_with` value of every CUDA target: compatible only with --config=cuda
# (//third_party:cuda_enabled); otherwise incompatible with every platform, so wildcard builds and
# tests skip it.
CUDA_ONLY = select({
    "//third_party:cuda_enabled": [],
    "//conditions:default": ["//third_party:incompatible"],
})
