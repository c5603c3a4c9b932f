"""The ``datamill`` command line, built on :mod:`datamill.client`."""
