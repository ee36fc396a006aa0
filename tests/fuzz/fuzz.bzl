"""hecate_fuzzer: a libFuzzer harness that also builds (and smoke-tests) without libFuzzer."""

def hecate_fuzzer(name, srcs, deps, corpus, mutations = 20000, data = []):
    """A fuzz harness `name` (defining LLVMFuzzerTestOneInput) and its smoke test `name_smoke`.

    With --config=fuzz (clang, libFuzzer, ASan + UBSan; scripts/fuzz.sh) the binary is a
    libFuzzer target. Otherwise it links fuzz_main.cc, and `name_smoke` runs it over `corpus`
    plus `mutations` seeded mutations.
    """
    native.cc_binary(
        name = name,
        testonly = True,
        srcs = srcs + select({
            "//tests/fuzz:fuzzing": [],
            "//conditions:default": ["//tests/fuzz:fuzz_main.cc"],
        }),
        deps = deps,
        data = data,
        linkopts = select({
            "//tests/fuzz:fuzzing": ["-fsanitize=fuzzer"],
            "//conditions:default": [],
        }),
    )
    native.sh_test(
        name = name + "_smoke",
        size = "medium",
        srcs = ["//tests/fuzz:run_smoke.sh"],
        args = ["$(location :%s)" % name, "--mutations=%d" % mutations, "$(locations %s)" % corpus],
        data = [":" + name, corpus] + data,
    )
