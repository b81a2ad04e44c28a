"""The one error type sandbox logic raises; the HTTP layer turns it into Twilio's classic error body."""

from __future__ import annotations


class TwilioError(Exception):
    """An API error as Twilio reports it: HTTP status plus a Twilio error code."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, object]:
        # The classic shape on purpose: a body with `type`/`title` makes twilio-python raise
        # TwilioServiceException instead of TwilioRestException.
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


def not_found(what: str) -> TwilioError:
    return TwilioError(404, 20404, f"The requested resource {what} was not found")


def bad_request(message: str) -> TwilioError:
    return TwilioError(400, 20001, message)


def stale_etag(sid: str) -> TwilioError:
    return TwilioError(412, 20412, f"The ETag provided does not match the current version of {sid}")
