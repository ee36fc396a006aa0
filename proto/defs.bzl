"""Code generation with the system protoc and gRPC plugins (Debian: protobuf-compiler, protobuf-compiler-grpc)."""

def _strip(src):
    return src[:-len(".proto")]

def grpc_cc_codegen(name, srcs, **kwargs):
    """Generates *.pb.{h,cc} and *.grpc.pb.{h,cc} for `srcs` (paths relative to this package)."""
    outs = []
    for src in srcs:
        base = _strip(src)
        outs += [base + ".pb.h", base + ".pb.cc", base + ".grpc.pb.h", base + ".grpc.pb.cc"]
    native.genrule(
        name = name,
        srcs = srcs,
        outs = outs,
        cmd = ("/usr/bin/protoc --proto_path={pkg} " +
               "--cpp_out=$(RULEDIR) --grpc_out=$(RULEDIR) " +
               "--plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin $(SRCS)").format(pkg = native.package_name()),
        message = "protoc (C++) " + name,
        **kwargs
    )

def grpc_py_codegen(name, srcs, **kwargs):
    """Generates *_pb2.py and *_pb2_grpc.py for `srcs` (paths relative to this package)."""
    outs = []
    for src in srcs:
        base = _strip(src)
        outs += [base + "_pb2.py", base + "_pb2_grpc.py"]
    native.genrule(
        name = name,
        srcs = srcs,
        outs = outs,
        cmd = ("/usr/bin/protoc --proto_path={pkg} " +
               "--python_out=$(RULEDIR) --grpc_out=$(RULEDIR) " +
               "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin $(SRCS)").format(pkg = native.package_name()),
        message = "protoc (Python) " + name,
        **kwargs
    )
