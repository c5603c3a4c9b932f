"""The client's resources, one module per router of the API (``datamill.api.routes``)."""

from datamill.client.resources.batch import BatchAPI
from datamill.client.resources.data_roots import DataRootsAPI
from datamill.client.resources.datasources import DataSourcesAPI, SchemasAPI
from datamill.client.resources.engines import EnginesAPI
from datamill.client.resources.exports import ExportsAPI
from datamill.client.resources.jobs import JobsAPI
from datamill.client.resources.projects import MembersAPI, ProjectsAPI
from datamill.client.resources.secrets import SecretsAPI
from datamill.client.resources.streaming import StreamingAPI
from datamill.client.resources.users import TokensAPI, UsersAPI
from datamill.client.resources.variables import VariablesAPI

__all__ = [
    "BatchAPI",
    "DataRootsAPI",
    "DataSourcesAPI",
    "EnginesAPI",
    "ExportsAPI",
    "JobsAPI",
    "MembersAPI",
    "ProjectsAPI",
    "SchemasAPI",
    "SecretsAPI",
    "StreamingAPI",
    "TokensAPI",
    "UsersAPI",
    "VariablesAPI",
]
