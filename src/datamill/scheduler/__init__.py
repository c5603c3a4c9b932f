"""The scheduler: when jobs fire and who fires them.

Its modules sit in the layers of the rest of the code (see ``.importlinter``):

* :mod:`~datamill.scheduler.cron` and :mod:`~datamill.scheduler.triggers` are pure, beside
  the domain: cron expressions, and the fire times of each scheduler type;
* :mod:`~datamill.scheduler.lease` holds the lease's statements, beside the store;
* :mod:`~datamill.scheduler.tick` is the use case, beside the services: one tick queues
  the runs of every due job; depend jobs are queued after their upstream succeeded;
* :mod:`~datamill.scheduler.process` is the process that holds the lease and ticks.

This package imports nothing itself, so importing one of its modules loads only that
module's layer.
"""
