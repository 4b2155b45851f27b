"""ext_proc protocol helpers: building Envoy's responses and reading its requests. Pure
functions over the generated protobuf messages, shared by ``extproc``."""

from __future__ import annotations

import traceback
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.type.v3 import http_status_pb2

from safeguards.adapters.csp.provider_api import MESSAGES_API, ProviderApi


def continue_headers(*, remove: tuple[str, ...] = (), path: str | None = None
                     ) -> pb.HeadersResponse:
    """Go on, removing ``remove``; with ``path``, the request goes on with that ``:path`` (and
    Envoy picks its route again)."""
    common = pb.CommonResponse()
    if remove:
        common.header_mutation.remove_headers.extend(remove)
    if path is not None:
        common.header_mutation.set_headers.append(base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=":path", raw_value=path.encode("latin-1"))))
        common.clear_route_cache = True
    return pb.HeadersResponse(response=common)


def immediate(status: int, message: str, *extra: tuple[str, str],
              api: ProviderApi = MESSAGES_API) -> pb.ProcessingResponse:
    """Envoy answers the client at once with an error in ``api``'s shape (Anthropic's unless
    the route is a provider's; ``message`` never quotes the request's content)."""
    answer = api.error(status, message)
    headers = pb.HeaderMutation(set_headers=[
        base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, raw_value=v))
        for k, v in (*answer.headers, *((k.encode(), v.encode()) for k, v in extra))
    ])
    return pb.ProcessingResponse(immediate_response=pb.ImmediateResponse(
        status=http_status_pb2.HttpStatus(code=answer.status),  # type: ignore[arg-type]
        headers=headers, body=answer.body,
        details=f"safeguards_{status}",
    ))


def body_response(body: bytes | None = None, *, clear: bool = False,
                  content_length: bool = False) -> pb.BodyResponse:
    common = pb.CommonResponse()
    if clear:
        common.body_mutation.clear_body = True
    elif body is not None:
        common.body_mutation.body = body
        if content_length:
            common.header_mutation.set_headers.append(base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key="content-length",
                                            raw_value=str(len(body)).encode())))
    return pb.BodyResponse(response=common)


def text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def peer_host(context: Any) -> str | None:
    """The gRPC peer's address (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``) without its port."""
    peer = str(context.peer()) if context is not None else ""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return None


def downstream_host(message: pb.ProcessingRequest) -> str | None:
    """The downstream client's address where Envoy sends it (``request_attributes:
    ["source.address"]``, as ``10.0.0.5:41000`` or ``[::1]:41000``), without its port; "" for
    one that does not parse (never loopback)."""
    attributes = message.attributes.get("envoy.filters.http.ext_proc")
    if attributes is None or "source.address" not in attributes.fields:
        return None
    address = attributes.fields["source.address"].string_value
    host, sep, port = address.rpartition(":")
    return host.strip("[]") if sep and port.isdigit() else ""


def header(headers: Any, name: str) -> str | None:
    for h in headers.headers:
        if h.key.lower() == name:
            return h.raw_value.decode("latin-1") if h.raw_value else str(h.value)
    return None


def redacted_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` and of what caused it, with each exception's type but never its
    message: a message may quote the request (a key, a parser's excerpt), and no prompt text is
    ever logged."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = "".join(traceback.format_tb(current.__traceback__))
        parts.append(f"Traceback (most recent call last):\n{frames}{type(current).__qualname__}"
                     " (message withheld)\n")
        current = current.__cause__ or (None if current.__suppress_context__
                                        else current.__context__)
    return "\nwhich led to\n\n".join(reversed(parts))
