"""Optional bearer-token check: `authorization: Bearer <token>` metadata on every call.

The scheme is matched in any case (`bearer`, `BEARER`: RFC 7235 section 2.1
makes auth schemes case-insensitive); the token itself exactly.

Health checks are exempt so Kubernetes gRPC probes (which send no metadata)
keep working. Reflection is not exempt: it reveals the API. The comparison
is constant-time. Only installed when a token is configured, so a server
without a token pays nothing per call.
"""

from __future__ import annotations

import hmac

import grpc

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)


def _deny(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    def abort(_request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    def __init__(self, token: str):
        if not token:
            raise ValueError("empty token")
        self._expected = token.encode()

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(EXEMPT_PREFIXES):
            return handler
        supplied = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                supplied = value
                break
        if supplied is None:
            return _deny(handler, "missing `authorization: Bearer <token>` metadata")
        scheme, _, credentials = str(supplied).strip().partition(" ")
        if scheme.lower() != "bearer":
            return _deny(handler, f"unsupported authorization scheme {scheme[:20]!r}; expected `Bearer <token>`")
        if not hmac.compare_digest(credentials.strip().encode(), self._expected):
            return _deny(handler, "invalid bearer token")
        return handler
