"""Sources and sinks: files and object storage, HDFS, and later HTTP, log search, TSDB, SQL."""
