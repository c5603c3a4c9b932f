"""``datamill.client``: the Python client of datamill's REST API.

>>> from datamill.client import DatamillClient, NotFound
>>> with DatamillClient("http://127.0.0.1:8270", token="dm_...") as dm:
...     project = dm.projects.create("sales")
...     try:
...         dm.datasources.get("sales", "orders")
...     except NotFound as exc:
...         print(exc.error_code)  # E18102

Results are the API's pydantic models (attribute names are the JSON's camelCase names;
``schema`` is ``schema_``), lists come as :class:`Page`, failures as :class:`DatamillAPIError`
subclasses chosen by HTTP status or :class:`DatamillConnectionError`.
"""

from datamill.client.client import (
    DEFAULT_URL,
    DatamillClient,
    DataSourcesAPI,
    MembersAPI,
    ProjectsAPI,
    SchemasAPI,
    SecretsAPI,
    TokensAPI,
    UsersAPI,
    VariablesAPI,
)
from datamill.client.errors import (
    BadRequest,
    Conflict,
    DatamillAPIError,
    DatamillClientError,
    DatamillConnectionError,
    DatamillProtocolError,
    Forbidden,
    InvalidName,
    NotFound,
    ServerError,
    Unauthorized,
)
from datamill.client.models import (
    DataSource,
    Health,
    IssuedToken,
    Member,
    Page,
    Preview,
    Principal,
    Project,
    ResolvedVariable,
    Role,
    SchemaField,
    Secret,
    Token,
    User,
    Variable,
    VariableType,
    Version,
)

__all__ = [
    "DEFAULT_URL",
    "BadRequest",
    "Conflict",
    "DataSource",
    "DataSourcesAPI",
    "DatamillAPIError",
    "DatamillClient",
    "DatamillClientError",
    "DatamillConnectionError",
    "DatamillProtocolError",
    "Forbidden",
    "Health",
    "InvalidName",
    "IssuedToken",
    "Member",
    "MembersAPI",
    "NotFound",
    "Page",
    "Preview",
    "Principal",
    "Project",
    "ProjectsAPI",
    "ResolvedVariable",
    "Role",
    "SchemaField",
    "SchemasAPI",
    "Secret",
    "SecretsAPI",
    "ServerError",
    "Token",
    "TokensAPI",
    "Unauthorized",
    "User",
    "UsersAPI",
    "Variable",
    "VariableType",
    "VariablesAPI",
    "Version",
]
