"""The REST API: routers parse, authorize, call one service and shape the response."""
