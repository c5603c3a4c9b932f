"""The guarded outbound toolkit that sources and sinks share.

* :mod:`.http`: the one HTTP client for calls on a user's behalf (resolve once, refuse
  private addresses, connect to the resolved address, never follow redirects);
* :mod:`.webhdfs`: the WebHDFS client of HDFS sources and sinks, over the same guard
  (redirects followed by hand, each hop guarded), and its read-only fsspec filesystem;
* :mod:`.s3`: S3-compatible object storage clients for an :class:`~datamill.domain.
  datasources.S3Store`, whose connection pool resolves names and checks every socket's
  address through the same guard (redirect hops included);
* :mod:`.errors`: :class:`OutboundError` and :class:`TransientOutboundError`.

The address rule itself is :mod:`datamill.security.outbound`; the URL text rule is
:func:`datamill.domain.urls.check_http_url`; data roots resolve through
:func:`datamill.security.paths.data_root`.
"""

from datamill.connectors.outbound.errors import OutboundError, TransientOutboundError

__all__ = ["OutboundError", "TransientOutboundError"]
