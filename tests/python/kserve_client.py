"""An outside client of sd-worker: KServe v2 stubs generated from proto/inference/grpc_service.proto with
Debian's grpc_python_plugin, calling the UNetStep node of the tiny test model with a bearer token.

usage: kserve_client.py STUB_DIR TARGET TOKEN OUT_PREFIX
Writes OUT_PREFIX.request (the serialized request it sent) and OUT_PREFIX (the raw eps bytes) and prints
"eps FP32 [1, 4, 8, 8]".
"""
import math
import struct
import sys

stub_dir, target, token, out = sys.argv[1:5]
sys.path.insert(0, stub_dir)

import grpc  # noqa: E402
from inference import grpc_service_pb2 as pb  # noqa: E402
from inference import grpc_service_pb2_grpc as pb_grpc  # noqa: E402


def f32(values):
    return struct.pack("<%df" % len(values), *values)


req = pb.ModelInferRequest(model_name="UNetStep", id="python-client")
req.parameters["checkpoint"].string_param = "tiny"
for name, datatype, shape, raw in [
    ("latents", "FP32", [1, 4, 8, 8], f32([math.sin(0.37 * i) for i in range(4 * 8 * 8)])),
    ("t", "FP64", [1], struct.pack("<d", 321.0)),
    ("context", "FP32", [1, 77, 64], f32([math.cos(0.013 * i) for i in range(77 * 64)])),
]:
    req.inputs.add(name=name, datatype=datatype, shape=shape)
    req.raw_input_contents.append(raw)

channel = grpc.insecure_channel(target)
stub = pb_grpc.GRPCInferenceServiceStub(channel)
live = stub.ServerLive(pb.ServerLiveRequest(), metadata=[("authorization", "Bearer " + token)], timeout=30)
assert live.live
resp = stub.ModelInfer(req, metadata=[("authorization", "Bearer " + token)], timeout=60)
o = resp.outputs[0]
print(o.name, o.datatype, list(o.shape))
with open(out, "wb") as f:
    f.write(resp.raw_output_contents[0])
with open(out + ".request", "wb") as f:
    f.write(req.SerializeToString())
try:
    stub.ModelInfer(req, timeout=30)
    print("no token: accepted?!")
    sys.exit(1)
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e.code()
    print("no token:", e.code().name)
