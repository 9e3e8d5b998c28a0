"""The server interceptor every FLAME service runs behind: authentication, per-RPC role rules, idempotent retries,
domain-error mapping to rich gRPC status, and one access-log line per call."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc

from flame_control.runtime.auth import PUBLIC_METHOD_PREFIXES, Authenticator
from flame_control.runtime.errors import DomainError, PermissionDenied, Unavailable
from flame_control.runtime.idempotency import IdempotencyCache
from flame_control.runtime.metrics import ProcessMetrics
from flame_control.runtime.service import AccessRules, Principal

log = logging.getLogger("flame.runtime")

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], error: DomainError) -> None:
    """Abort the RPC with the error's code, message and ``google.rpc.Status`` details (raises)."""
    status = error.to_status()
    await context.abort(
        error.code, error.message, trailing_metadata=((_STATUS_DETAILS_KEY, status.SerializeToString()),)
    )


class RuntimeInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps every handler of one service."""

    def __init__(
        self,
        service_name: str,
        access: AccessRules,
        authenticator: Authenticator,
        idempotency: IdempotencyCache,
        metrics: ProcessMetrics | None = None,
    ) -> None:
        self.service_name = service_name
        self.metrics = metrics
        self.access = access
        self.authenticator = authenticator
        self.idempotency = idempotency
        self.component = service_name.split(".")[1] if service_name.count(".") >= 2 else service_name
        #: Set when the server stops taking calls: open response streams then end with UNAVAILABLE at once (the
        #: client reconnects, as after an HTTP/2 GOAWAY) instead of holding the shutdown for its whole grace period.
        self.closing = asyncio.Event()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(details)
        if handler is None or details.method.startswith(PUBLIC_METHOD_PREFIXES):
            return handler
        method_name = details.method.rsplit("/", 1)[-1]
        return _wrap(handler, self, details.method, method_name)

    def authorize(self, metadata: Any, method_name: str) -> Principal:
        """Authenticate the caller and check the per-RPC role rule; raises a DomainError."""
        principal = self.authenticator.principal(metadata)
        if not self.access.allowed(method_name, principal.role):
            raise PermissionDenied(f"role {principal.role.value} may not call {self.service_name}/{method_name}")
        return principal

    def log_call(self, method: str, principal: Principal | None, code: str, started: float) -> None:
        """One access-log line and one metrics observation per call (no request contents: they may hold personal
        data)."""
        seconds = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.observe_rpc(self.service_name, method.rsplit("/", 1)[-1], code, seconds)
        log.info(
            "rpc",
            extra={
                "fields": {
                    "method": method,
                    "subject": principal.subject if principal else "-",
                    "code": code,
                    "ms": f"{seconds * 1000:.2f}",
                }
            },
        )


def _wrap(
    handler: grpc.RpcMethodHandler[Any, Any], ic: RuntimeInterceptor, method: str, name: str
) -> grpc.RpcMethodHandler[Any, Any]:
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _unary(handler.unary_unary, ic, method, name, idempotent=True),
            handler.request_deserializer,
            handler.response_serializer,
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            _unary(handler.stream_unary, ic, method, name, idempotent=False),
            handler.request_deserializer,
            handler.response_serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _streaming(handler.unary_stream, ic, method, name),
            handler.request_deserializer,
            handler.response_serializer,
        )
    return grpc.stream_stream_rpc_method_handler(
        _streaming(handler.stream_stream, ic, method, name), handler.request_deserializer, handler.response_serializer
    )


def _unary(behavior: Any, ic: RuntimeInterceptor, method: str, name: str, idempotent: bool) -> Any:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        principal: Principal | None = None
        code = "OK"
        try:
            principal = ic.authorize(context.invocation_metadata(), name)
            if idempotent:
                return await ic.idempotency.run(
                    method, principal.subject, request, lambda: _call(behavior, request, context)
                )
            return await _call(behavior, request, context)
        except Exception as exc:
            code = _code_of(context, exc)
            await _fail(context, method, exc)
        finally:
            ic.log_call(method, principal, code, started)

    return wrapped


def _streaming(behavior: Any, ic: RuntimeInterceptor, method: str, name: str) -> Any:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        started = time.perf_counter()
        principal: Principal | None = None
        code = "OK"
        try:
            principal = ic.authorize(context.invocation_metadata(), name)
            result = behavior(request, context)
            if inspect.isawaitable(result):
                result = await result
            if hasattr(result, "__aiter__"):
                async for item in _until_closed(result, ic.closing):
                    yield item
            elif result is not None:
                for item in result:
                    yield item
        except Exception as exc:
            code = _code_of(context, exc)
            await _fail(context, method, exc)
        finally:
            ic.log_call(method, principal, code, started)

    return wrapped


async def _until_closed(items: AsyncIterator[Any], closing: asyncio.Event) -> AsyncIterator[Any]:
    """The items of a response stream until ``closing`` is set; then the stream ends with UNAVAILABLE."""
    source = items.__aiter__()
    closed = asyncio.ensure_future(closing.wait())
    try:
        while True:
            nxt = asyncio.ensure_future(source.__anext__())
            await asyncio.wait((nxt, closed), return_when=asyncio.FIRST_COMPLETED)
            if not nxt.done():
                nxt.cancel()
                await asyncio.gather(nxt, return_exceptions=True)
                raise Unavailable("the server is shutting down; reconnect")
            try:
                item = nxt.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        closed.cancel()
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await asyncio.gather(aclose(), return_exceptions=True)


async def _call(behavior: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    result = behavior(request, context)
    return await result if inspect.isawaitable(result) else result


async def _fail(context: grpc.aio.ServicerContext[Any, Any], method: str, exc: Exception) -> NoReturn:
    """The one mapping from an exception in a handler to the status the client sees (always raises)."""
    if isinstance(exc, NotImplementedError):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented yet (see docs/)")
    if isinstance(exc, DomainError):
        await abort_with(context, exc)
    if _code_of(context, exc) == "INTERNAL":
        log.exception("unhandled error in %s", method, exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error (see server log)")
    raise exc


def _code_of(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> str:
    """The status name a call ends with for ``exc``."""
    if isinstance(exc, NotImplementedError):
        return "UNIMPLEMENTED"
    if isinstance(exc, DomainError):
        return exc.code.name
    # context.abort raises AbortError after setting the code; cancellations are not errors of ours.
    if type(exc).__name__ in ("AbortError", "CancelledError", "UsageError"):
        code = context.code()
        return code.name if isinstance(code, grpc.StatusCode) else "ABORTED"
    return "INTERNAL"
