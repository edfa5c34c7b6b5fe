"""A stand-in resource provider for engine tests where the real one cannot be built here
(pulumi-resource-command) or fetched (pulumi-resource-digitalocean): it speaks Pulumi's provider
gRPC protocol, accepts every input, diffs old inputs against new ones like an inputs-driven
provider, and "creates" by echoing the inputs back with a numeric id. It reaches no cloud and no
host. What it cannot stand in for is the real provider's own normalisation (what DigitalOcean or
pulumi-command report back); that is what the skipped engine tests check with the real plugins.

    python -u standin_provider.py <name> <version> [engine address]   (prints its port)
"""

from __future__ import annotations

import itertools
import sys
import time
from concurrent import futures

import grpc
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import plugin_pb2, provider_pb2, provider_pb2_grpc

IDS = itertools.count(1001)
# Outputs the real providers compute and the program reads (the rest echo the inputs).
COMPUTED = {
    "digitalocean:index/droplet:Droplet": lambda n: {
        "ipv4Address": f"203.0.113.{n % 250}",
        "ipv4AddressPrivate": f"10.118.0.{n % 250}",
    },
    "command:remote:Command": lambda n: {"stdout": '{"changed": []}', "stderr": ""},
}


def resource_type(urn: str) -> str:
    """The type token of a URN (urn:pulumi:stack::project::[parent$]type::name)."""
    return urn.split("::")[2].split("$")[-1]


class StandIn(provider_pb2_grpc.ResourceProviderServicer):
    def __init__(self, version: str):
        self.version = version

    def GetPluginInfo(self, request, context):
        return plugin_pb2.PluginInfo(version=self.version)

    def GetSchema(self, request, context):
        return provider_pb2.GetSchemaResponse(schema="{}")

    def CheckConfig(self, request, context):
        return provider_pb2.CheckResponse(inputs=request.news)

    def DiffConfig(self, request, context):
        return provider_pb2.DiffResponse(changes=provider_pb2.DiffResponse.DIFF_NONE)

    def Configure(self, request, context):
        return provider_pb2.ConfigureResponse(
            acceptSecrets=True, acceptResources=True, supportsPreview=False
        )

    def Check(self, request, context):
        return provider_pb2.CheckResponse(inputs=request.news)

    def Diff(self, request, context):
        olds, news = dict(request.old_inputs.items()), dict(request.news.items())
        changed = sorted(k for k in set(olds) | set(news) if olds.get(k) != news.get(k))
        if not changed:
            return provider_pb2.DiffResponse(changes=provider_pb2.DiffResponse.DIFF_NONE)
        return provider_pb2.DiffResponse(changes=provider_pb2.DiffResponse.DIFF_SOME, diffs=changed)

    def Create(self, request, context):
        number = next(IDS)
        properties = struct_pb2.Struct()
        properties.CopyFrom(request.properties)
        computed = COMPUTED.get(resource_type(request.urn))
        if computed:
            properties.update(computed(number))
        return provider_pb2.CreateResponse(id=str(number), properties=properties)

    def Read(self, request, context):
        return provider_pb2.ReadResponse(
            id=request.id, properties=request.properties, inputs=request.inputs
        )

    def Update(self, request, context):
        properties = struct_pb2.Struct()
        properties.CopyFrom(request.olds)
        properties.update(dict(request.news.items()))
        return provider_pb2.UpdateResponse(properties=properties)

    def Delete(self, request, context):
        return empty_pb2.Empty()

    def Cancel(self, request, context):
        return empty_pb2.Empty()


def main() -> None:
    _, name, version, *_ = sys.argv
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    provider_pb2_grpc.add_ResourceProviderServicer_to_server(StandIn(version), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop(0)


if __name__ == "__main__":
    main()
