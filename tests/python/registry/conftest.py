"""Fixtures for the Confluent Python client suite: the registry under test and fresh names.

The registry's URL comes from ORDERFLOW_REGISTRY_URL; services/registry/tests/clients.rs starts a
registry on its own database and runs this suite against it.
"""

import os
import uuid

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient


@pytest.fixture(scope="session")
def registry_url() -> str:
    url = os.environ.get("ORDERFLOW_REGISTRY_URL")
    if not url:
        pytest.fail("ORDERFLOW_REGISTRY_URL is not set: run through `cargo test -p orderflow-registry --test clients`")
    return url


def credentials(variable: str) -> str:
    user_info = os.environ.get(variable)
    if not user_info:
        pytest.fail(f"{variable} is not set: run through `cargo test -p orderflow-registry --test clients`")
    return user_info


def tls_settings() -> dict:
    """What a client of the https:// registry under test trusts: its CA, whose PEM file
    ORDERFLOW_REGISTRY_CA_FILE names (Confluent's `ssl.ca.location`)."""
    ca = os.environ.get("ORDERFLOW_REGISTRY_CA_FILE")
    return {"ssl.ca.location": ca} if ca else {}


def connect(registry_url: str, user_variable: str) -> SchemaRegistryClient:
    # max.retries 0: a 5xx is a failure to see, not something to retry around. The registry
    # requires HTTP basic authentication, sent as Confluent's clients send it.
    return SchemaRegistryClient(
        {
            "url": registry_url,
            "max.retries": 0,
            "basic.auth.user.info": credentials(user_variable),
            **tls_settings(),
        }
    )


@pytest.fixture
def client(registry_url: str):
    """A client of the suite's admin user."""
    with connect(registry_url, "ORDERFLOW_REGISTRY_USER_INFO") as c:
        yield c


@pytest.fixture
def reader(registry_url: str):
    """A client of a user with the read role only."""
    with connect(registry_url, "ORDERFLOW_REGISTRY_READER_INFO") as c:
        yield c


@pytest.fixture
def subject() -> str:
    return f"py-{uuid.uuid4().hex[:10]}-value"
