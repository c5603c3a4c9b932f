"""Sources and sinks behind small interfaces: :mod:`.files` (file data sources),
:mod:`.streams` (stream connections), :mod:`.sinks` (export kinds), and the guarded
outbound toolkit they share, :mod:`.outbound`."""
