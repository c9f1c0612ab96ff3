"""The app's own OpenAPI document keeps what a route reads outside FastAPI's parameters."""

from assistantd.app import create_app
from assistantd.runs.dependencies import SEARCH_CONTENT
from assistantd.settings import Settings


def test_create_run_documents_the_include_parameter_its_dependency_reads():
    # runs/dependencies.run_start reads ``include[]`` from the query itself (one dependency where
    # the route had four); the route's schema still names it, as the spec does.
    operation = create_app(Settings(_env_file=None)).openapi()["paths"]["/v1/threads/{thread_id}/runs"]["post"]
    (include,) = [p for p in operation["parameters"] if p["name"] == "include[]"]
    assert include["in"] == "query" and include["schema"]["items"]["enum"] == [SEARCH_CONTENT]
