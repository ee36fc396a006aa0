#!/bin/sh
# Coverage is not collected through Bazel in this project (see third_party/README.md).
exit 0
