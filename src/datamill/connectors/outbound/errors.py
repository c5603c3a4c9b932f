"""How a call to the outside fails: worth retrying or not."""


class OutboundError(Exception):
    """The call failed in a way a retry will not fix (bad data, refused request)."""


class TransientOutboundError(OutboundError):
    """The destination is down, timed out or answered 5xx: worth retrying."""


def first_line(exc: BaseException, limit: int = 500) -> str:
    """The first line of an error's text (its type's name when it has none)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:limit]
