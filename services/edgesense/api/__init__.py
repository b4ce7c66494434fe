"""The REST API: an HTTP/JSON -> gRPC transcoder, driven by `google.api.http` rules.

A generic transcoder in the manner of grpc-gateway and Envoy's
grpc_json_transcoder: the routes come from the annotations in the service
descriptors, never from code, so annotating an RPC is all it takes to expose
it. The modules, each with one job:

    templates   HttpRule path templates: parse, match, percent-decode
    rules       routes from the descriptors' http rules
    router      route for a method and path, or the 404/405 answer
    fields      field paths and text values (path variables, query parameters)
    jsonshape   a JSON body checked against the request message, naming the field
    transcode   HTTP request -> request message; response message -> JSON
    metadata    HTTP headers forwarded as gRPC metadata
    backends    gRPC channels and generic unary calls
    status      google.rpc.Status errors and the gRPC -> HTTP status table
    schemas, comments, openapi   the OpenAPI document
    metrics     Prometheus counters and histograms
    server      the aiohttp application and its lifecycle

Errors:

    TranscodeError (status.py)  an answer that is not a success, as google.rpc.Status
    TemplateSyntaxError         a bad path template (a ConfigurationError at start)
    MalformedPathError          a request path with bad escapes (answered 400)
    FieldValueError             a field path or text value that does not fit (400)
    BodyFieldError              a body field unknown or of the wrong type (400, BadRequest)
    edgesense.common.errors.ConfigurationError   the API cannot start, saying why
"""

from edgesense.api.server import (
    HANDLERS_KEY,
    RunningApi,
    create_app,
    default_backends,
    run_api,
    start_api,
)
from edgesense.api.status import HTTP_STATUS_BY_CODE, TranscodeError, http_status

__all__ = [
    "HANDLERS_KEY",
    "HTTP_STATUS_BY_CODE",
    "RunningApi",
    "TranscodeError",
    "create_app",
    "default_backends",
    "http_status",
    "run_api",
    "start_api",
]
