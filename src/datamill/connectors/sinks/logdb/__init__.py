"""The ``logdb`` sink: index a batch's rows as documents in OpenSearch or Elasticsearch.

Rows go through the ``_bulk`` API, ``batchSize`` documents per request, into the index
``destRepoName`` (created by the server on first write unless it exists). ``doc`` maps
document fields to job fields.

Re-exporting a batch never duplicates: every document has a deterministic ``_id``, a hash
of the job, the batch time and the values of ``idFields`` (default: every mapped field),
plus the occurrence number among rows with equal id values, so the same batch always
produces the same set of ids and a rerun overwrites them.

A row is *invalid* when one of its mapped values cannot be written as JSON (NaN,
infinities), when a job field the schema marks required is null, or when the server
rejects the document (a per-item 4xx such as a mapping conflict). With ``omitInvalid``
such rows are skipped and counted; without it the export fails (rows checked locally fail
it before anything is sent). Per-item 429/5xx answers make the run fail transiently, and
the retry rewrites the same ids.

Credentials come only from the secret (``username`` and ``password``, basic auth).
"""

from datamill.connectors.sinks.logdb.sink import LogdbSink
from datamill.connectors.sinks.logdb.spec import LogdbSpec

__all__ = ["LogdbSink", "LogdbSpec"]
