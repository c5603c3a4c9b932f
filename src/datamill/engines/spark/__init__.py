"""Apache Spark through Spark Connect: batch jobs on a Spark server or cluster.

Only this package imports pyspark, and only when a session opens (:mod:`.session`).
"""

from datamill.engines.spark.engine import SparkEngine

__all__ = ["SparkEngine"]
