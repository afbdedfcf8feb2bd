"""Problem bodies (RFC 7807 style) with the ``type`` URIs of Orb's OpenAPI document."""

from __future__ import annotations

_ORB_ERRORS = "https://docs.withorb.com/reference/error-responses#"
# The `type` of each problem body, as in Orb's OpenAPI document; other statuses use about:blank.
ERROR_TYPES = {
    400: _ORB_ERRORS + "400-request-validation-errors",
    401: _ORB_ERRORS + "401-authentication-error",
    404: _ORB_ERRORS + "404-url-not-found",
    409: _ORB_ERRORS + "409-resource-conflict",
    413: _ORB_ERRORS + "413-request-too-large",
    429: _ORB_ERRORS + "429-too-many-requests",
    500: _ORB_ERRORS + "500-internal-server-error",
}
RESOURCE_NOT_FOUND = _ORB_ERRORS + "404-resource-not-found"


class Problem(Exception):
    """A request the server refuses as a whole; it becomes an RFC 7807-style body."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        errors: list[object] | None = None,
        *,
        type_: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors
        self.type_ = type_
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        """The JSON body: ``type``, ``status``, ``title``, ``detail`` (+ ``validation_errors``)."""
        body: dict[str, object] = {
            "type": self.type_ or ERROR_TYPES.get(self.status, "about:blank"),
            "status": self.status,
            "title": self.title,
            "detail": self.detail,
        }
        if self.status == 400 or self.errors is not None:
            body["validation_errors"] = self.errors if self.errors is not None else [self.detail]
        return body


def bad_request(detail: str, errors: list[object] | None = None) -> Problem:
    """A 400 whose ``validation_errors`` default to ``[detail]``."""
    return Problem(400, "The request is not valid", detail, errors if errors else [detail])
