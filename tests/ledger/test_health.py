"""The standard gRPC health service and server reflection, open to callers without a token."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.ledger.helpers import wait_for_health

SERVICE_NAME = "credits.ledger.v1.LedgerService"


@pytest.mark.parametrize("service", ["", SERVICE_NAME], ids=["server", "ledger-service"])
async def test_health_check_is_serving_without_a_token(channel, service):
    await wait_for_health(channel, serving=True, service=service)  # the first probe runs after start-up
    response = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=10
    )
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_check_of_an_unknown_service_is_not_found(channel):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def reflect(channel: grpc.aio.Channel, request: reflection_pb2.ServerReflectionRequest):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([request]), timeout=10)
    responses = [response async for response in call]
    assert len(responses) == 1
    return responses[0]


async def test_reflection_lists_the_ledger_service(channel):
    response = await reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {service.name for service in response.list_services_response.service}
    assert SERVICE_NAME in names
    assert "grpc.health.v1.Health" in names


async def test_reflection_describes_the_ledger_service(channel):
    response = await reflect(channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME))
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]
    ledger_file = next(file for file in files if file.package == "credits.ledger.v1")
    methods = {method.name for service in ledger_file.service for method in service.method}
    assert {"GetBalance", "Credit", "Debit", "ListTransactions", "AdminAdjust", "Anonymize"} <= methods
