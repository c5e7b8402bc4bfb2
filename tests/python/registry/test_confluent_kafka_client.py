"""Confluent's own Python client (confluent-kafka, SchemaRegistryClient) against the registry:
every method of the client, and the AvroSerializer/AvroDeserializer round trip.

Each test is named after the client call it exercises (test_<method>...).
"""

import json
import os
import uuid

import pytest
from confluent_kafka.schema_registry import (
    AssociationCreateOrUpdateInfo,
    AssociationCreateOrUpdateRequest,
    ConfigCompatibilityLevel,
    Metadata,
    MetadataProperties,
    Rule,
    RuleKind,
    RuleMode,
    RuleSet,
    Schema,
    SchemaReference,
    SchemaRegistryClient,
    SchemaRegistryError,
    ServerConfig,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from conftest import tls_settings


def record(fields: list, name: str = "Payment", namespace: str = "orderflow.test") -> str:
    return json.dumps({"type": "record", "name": name, "namespace": namespace, "fields": fields})


V1 = record([{"name": "id", "type": "string"}, {"name": "amount", "type": "long"}])
V2 = record(
    [
        {"name": "id", "type": "string"},
        {"name": "amount", "type": "long"},
        {"name": "note", "type": ["null", "string"], "default": None},
    ]
)
# Adds a required field: BACKWARD refuses it.
BREAKING = record(
    [{"name": "id", "type": "string"}, {"name": "amount", "type": "long"}, {"name": "currency", "type": "string"}]
)
MONEY = record([{"name": "minor", "type": "long"}, {"name": "currency", "type": "string"}], name="Money")


def own_record() -> str:
    """A record no other test registers, for tests that count what uses one id."""
    return record([{"name": "id", "type": "string"}], name=f"Own{uuid.uuid4().hex[:10]}")


def avro(text: str, **kwargs) -> Schema:
    return Schema(text, "AVRO", **kwargs)


def error_of(call) -> SchemaRegistryError:
    with pytest.raises(SchemaRegistryError) as caught:
        call()
    return caught.value


def authenticated(registry_url: str) -> dict:
    """A client configuration with the suite's credentials (Confluent's basic.auth.user.info)
    that trusts the registry's CA."""
    return {
        "url": registry_url,
        "basic.auth.user.info": os.environ["ORDERFLOW_REGISTRY_USER_INFO"],
        **tls_settings(),
    }


def fresh(prefix: str = "py") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}-value"


# --- authentication (basic.auth.user.info) ----------------------------------------------------


def test_a_client_without_credentials_is_refused(client, registry_url, subject):
    anonymous = SchemaRegistryClient({"url": registry_url, "max.retries": 0, **tls_settings()})
    err = error_of(lambda: anonymous.register_schema(subject, avro(V1)))
    assert err.http_status_code == 401
    err = error_of(lambda: anonymous.get_subjects())
    assert err.http_status_code == 401
    # The refused registration stored nothing.
    assert subject not in client.get_subjects()


def test_a_wrong_password_is_refused(registry_url):
    wrong = SchemaRegistryClient(
        {
            "url": registry_url,
            "max.retries": 0,
            "basic.auth.user.info": "admin:not-the-password",
            **tls_settings(),
        }
    )
    err = error_of(lambda: wrong.get_subjects())
    assert err.http_status_code == 401


def test_a_client_that_does_not_trust_the_registrys_certificate_gets_nothing(registry_url, client, subject):
    # The suite runs against a registry serving HTTPS with a certificate of its own CA.
    assert registry_url.startswith("https://"), registry_url
    settings = {**authenticated(registry_url), "max.retries": 0}
    del settings["ssl.ca.location"]
    untrusting = SchemaRegistryClient(settings)
    with pytest.raises(Exception) as refused:
        untrusting.register_schema(subject, avro(V1))
    assert "CERTIFICATE_VERIFY_FAILED" in repr(refused.value), repr(refused.value)
    assert subject not in client.get_subjects()


def test_a_reader_reads_but_cannot_register_or_administer(client, reader, subject):
    schema_id = client.register_schema(subject, avro(V1))
    assert reader.get_schema(schema_id).schema_str == V1
    assert subject in reader.get_subjects()
    err = error_of(lambda: reader.register_schema(subject, avro(V2)))
    assert err.http_status_code == 403
    assert "read role" in err.error_message
    err = error_of(lambda: reader.set_compatibility(subject, "NONE"))
    assert err.http_status_code == 403
    err = error_of(lambda: reader.delete_subject(subject))
    assert err.http_status_code == 403
    # Nothing the refused calls asked for happened.
    assert client.get_versions(subject) == [1]


# --- registration and lookup ------------------------------------------------------------------


def test_register_schema(client, subject):
    first = client.register_schema(subject, avro(V1))
    assert client.register_schema(subject, avro(V1)) == first, "the same schema keeps its id"
    second = client.register_schema(subject, avro(V2))
    assert second != first
    assert client.get_versions(subject) == [1, 2]


def test_register_schema_refused_as_incompatible(client, subject):
    client.register_schema(subject, avro(V1))
    err = error_of(lambda: client.register_schema(subject, avro(BREAKING)))
    assert (err.http_status_code, err.error_code) == (409, 409)
    assert "currency" in err.error_message and "READER_FIELD_MISSING_DEFAULT_VALUE" in err.error_message


def test_register_schema_invalid(client, subject):
    err = error_of(lambda: client.register_schema(subject, avro('{"type": "recrd"}')))
    assert (err.http_status_code, err.error_code) == (422, 42201)


def test_register_schema_full_response(client, subject):
    registered = client.register_schema_full_response(subject, avro(V1))
    assert registered.schema_id == client.get_version(subject, 1).schema_id
    assert registered.subject == subject


def test_register_schema_normalize_schemas(client, subject):
    """normalize=true: the same schema written differently gets one id, references included."""
    client.register_schema(f"{subject}-money", avro(MONEY))
    client.register_schema(f"{subject}-fx", avro(record([{"name": "rate", "type": "double"}], name="Fx")))
    uses = record(
        [{"name": "price", "type": "orderflow.test.Money"}, {"name": "fx", "type": "orderflow.test.Fx"}], name="Quote"
    )
    refs = [SchemaReference("orderflow.test.Money", f"{subject}-money", 1), SchemaReference("orderflow.test.Fx", f"{subject}-fx", 1)]
    first = client.register_schema(subject, avro(uses, references=refs), normalize_schemas=True)
    reordered = json.dumps(json.loads(uses), indent=4, sort_keys=True)
    again = client.register_schema(subject, avro(reordered, references=list(reversed(refs))), normalize_schemas=True)
    assert again == first
    assert client.get_versions(subject) == [1]
    found = client.lookup_schema(subject, avro(reordered, references=list(reversed(refs))), normalize_schemas=True)
    assert found.schema_id == first


def test_lookup_schema(client, subject):
    """The issue's case: the client sends deleted=True and normalize=False, capitalized."""
    schema_id = client.register_schema(subject, avro(V1))
    found = client.lookup_schema(subject, avro(json.dumps(json.loads(V1), indent=2)))
    assert (found.schema_id, found.version, found.subject) == (schema_id, 1, subject)
    assert found.guid


def test_lookup_schema_deleted(client, subject):
    client.register_schema(subject, avro(V1))
    client.delete_subject(subject)
    assert client.lookup_schema(subject, avro(V1), deleted=True).version == 1
    fresh_client = SchemaRegistryClient(client.config())
    err = error_of(lambda: fresh_client.lookup_schema(subject, avro(V1), deleted=False))
    assert (err.http_status_code, err.error_code) == (404, 40401)


def test_lookup_schema_not_found(client, subject):
    client.register_schema(subject, avro(V1))
    err = error_of(lambda: client.lookup_schema(subject, avro(V2)))
    assert (err.http_status_code, err.error_code) == (404, 40403)
    err = error_of(lambda: client.lookup_schema(fresh(), avro(V1)))
    assert (err.http_status_code, err.error_code) == (404, 40401)


# --- reading schemas --------------------------------------------------------------------------


def test_get_schema(client, subject):
    schema_id = client.register_schema(subject, avro(V1))
    fetched = client.get_schema(schema_id)
    assert json.loads(fetched.schema_str) == json.loads(V1)
    assert fetched.schema_type == "AVRO"
    other = SchemaRegistryClient(client.config())
    assert json.loads(other.get_schema(schema_id, subject_name=subject, fmt="default").schema_str) == json.loads(V1)
    err = error_of(lambda: other.get_schema(987654))
    assert (err.http_status_code, err.error_code) == (404, 40403)


def test_get_schema_by_guid(client, subject):
    client.register_schema(subject, avro(V1))
    guid = client.lookup_schema(subject, avro(V1)).guid
    assert json.loads(client.get_schema_by_guid(guid).schema_str) == json.loads(V1)
    err = error_of(lambda: client.get_schema_by_guid(str(uuid.uuid4())))
    assert (err.http_status_code, err.error_code) == (404, 40403)


def test_get_schema_types(client):
    assert client.get_schema_types() == ["AVRO"]


def test_get_subjects_by_schema_id(client, subject):
    own = own_record()
    schema_id = client.register_schema(subject, avro(own))
    client.register_schema(f"{subject}-2", avro(own))
    assert client.get_subjects_by_schema_id(schema_id) == [subject, f"{subject}-2"]
    assert client.get_subjects_by_schema_id(schema_id, subject_name=subject) == [subject]
    assert client.get_subjects_by_schema_id(schema_id, offset=1, limit=1) == [f"{subject}-2"]
    client.delete_subject(f"{subject}-2")
    assert client.get_subjects_by_schema_id(schema_id) == [subject]
    assert client.get_subjects_by_schema_id(schema_id, deleted=True) == [subject, f"{subject}-2"]


def test_get_schema_versions(client, subject):
    own = own_record()
    schema_id = client.register_schema(subject, avro(own))
    client.register_schema(f"{subject}-2", avro(own))
    pairs = [(v.subject, v.version) for v in client.get_schema_versions(schema_id)]
    assert pairs == [(subject, 1), (f"{subject}-2", 1)]
    pairs = [(v.subject, v.version) for v in client.get_schema_versions(schema_id, subject_name=f"{subject}-2")]
    assert pairs == [(f"{subject}-2", 1)]


def test_get_subjects(client, subject):
    prefix = subject[: -len("-value")]
    client.register_schema(f"{prefix}-a", avro(V1))
    client.register_schema(f"{prefix}-b", avro(V1))
    assert client.get_subjects(subject_prefix=prefix) == [f"{prefix}-a", f"{prefix}-b"]
    assert client.get_subjects(subject_prefix=f":.:{prefix}") == [f"{prefix}-a", f"{prefix}-b"]
    assert client.get_subjects(subject_prefix=prefix, offset=1, limit=1) == [f"{prefix}-b"]
    assert f"{prefix}-a" in client.get_subjects()
    client.delete_subject(f"{prefix}-a")
    assert client.get_subjects(subject_prefix=prefix) == [f"{prefix}-b"]
    assert client.get_subjects(subject_prefix=prefix, deleted=True) == [f"{prefix}-a", f"{prefix}-b"]
    # The client sends `deleted_only`; Confluent reads `deletedOnly` and ignores the unknown
    # name, and so does this registry (tested raw in test_get_subjects_deleted_only_as_confluent_names_it).
    assert client.get_subjects(subject_prefix=prefix, deleted_only=True) == [f"{prefix}-b"]


def test_get_subjects_deleted_only_as_confluent_names_it(client, subject):
    client.register_schema(subject, avro(V1))
    client.delete_subject(subject)
    assert client._rest_client.get("subjects", {"subjectPrefix": subject, "deletedOnly": "TRUE"}) == [subject]


def test_get_latest_version(client, subject):
    client.register_schema(subject, avro(V1))
    latest = client.get_latest_version(subject)
    assert (latest.version, latest.subject) == (1, subject)
    client.register_schema(subject, avro(V2))
    assert client.get_latest_version(subject).version == 1, "the client caches the latest version"
    client.clear_latest_caches()
    assert client.get_latest_version(subject).version == 2


def test_get_version(client, subject):
    first = client.register_schema(subject, avro(V1))
    client.register_schema(subject, avro(V2))
    assert client.get_version(subject, 1).schema_id == first
    assert client.get_version(subject, "latest").version == 2
    client.delete_version(subject, 1)
    fresh_client = SchemaRegistryClient(client.config())
    err = error_of(lambda: fresh_client.get_version(subject, 1))
    assert (err.http_status_code, err.error_code) == (404, 40402)
    assert fresh_client.get_version(subject, 1, deleted=True).schema_id == first
    err = error_of(lambda: fresh_client.get_version(subject, 0))
    assert (err.http_status_code, err.error_code) == (422, 42202)


def test_get_versions(client, subject):
    client.register_schema(subject, avro(V1))
    client.register_schema(subject, avro(V2))
    client.delete_version(subject, 1)
    assert client.get_versions(subject) == [2]
    assert client.get_versions(subject, deleted=True) == [1, 2]
    assert client.get_versions(subject, deleted=True, offset=1, limit=1) == [2]
    assert client._rest_client.get(f"subjects/{subject}/versions", {"deletedOnly": "true"}) == [1]
    err = error_of(lambda: client.get_versions(fresh()))
    assert (err.http_status_code, err.error_code) == (404, 40401)


def test_get_latest_with_metadata(client, subject):
    owned = Metadata(tags=None, properties=MetadataProperties({"owner": "payments", "tier": "1"}), sensitive=None)
    client.register_schema(subject, avro(V1, metadata=owned))
    client.register_schema(subject, avro(V2))
    found = client.get_latest_with_metadata(subject, {"owner": "payments"})
    assert found.version == 1
    assert found.schema.metadata.properties.properties == {"owner": "payments", "tier": "1"}
    err = error_of(lambda: client.get_latest_with_metadata(subject, {"owner": "nobody"}))
    assert (err.http_status_code, err.error_code) == (404, 40403)


def test_register_schema_with_metadata_and_rule_set(client, subject):
    """Newer clients send metadata and ruleSet: stored with the version and returned."""
    rules = RuleSet(
        migration_rules=None,
        domain_rules=[Rule("checkAmount", None, RuleKind.CONDITION, RuleMode.WRITE, "CEL", None, None, "message.amount > 0", None, None, False)],
    )
    meta = Metadata(tags=None, properties=MetadataProperties({"owner": "payments"}), sensitive=None)
    schema_id = client.register_schema(subject, avro(V1, metadata=meta, rule_set=rules))
    fetched = SchemaRegistryClient(client.config()).get_version(subject, 1)
    assert fetched.schema_id == schema_id
    assert fetched.schema.metadata.properties.properties == {"owner": "payments"}
    assert [r.name for r in fetched.schema.rule_set.domain_rules] == ["checkAmount"]
    # The same text without metadata is another schema (another id), as in Confluent.
    client.set_compatibility(subject, "NONE")
    assert client.register_schema(subject, avro(V1)) != schema_id
    # Null metadata and ruleSet are accepted as absent.
    body = {"schema": V2, "metadata": None, "ruleSet": None}
    assert client._rest_client.post(f"subjects/{subject}/versions", body)["id"] > 0


# --- references -------------------------------------------------------------------------------


def test_get_referenced_by(client, subject):
    money = f"{subject}-money"
    client.register_schema(money, avro(MONEY))
    uses = record([{"name": "price", "type": "orderflow.test.Money"}], name="Priced")
    referrer = client.register_schema(subject, avro(uses, references=[SchemaReference("orderflow.test.Money", money, 1)]))
    assert client.get_referenced_by(money, 1) == [referrer]
    assert client.get_referenced_by(money, "latest") == [referrer]
    assert SchemaRegistryClient(client.config()).get_schema(referrer).references[0].subject == money
    # A referenced version cannot be deleted (42206), nor can its subject.
    err = error_of(lambda: client.delete_version(money, 1))
    assert (err.http_status_code, err.error_code) == (422, 42206)
    err = error_of(lambda: client.delete_subject(money))
    assert (err.http_status_code, err.error_code) == (422, 42206)
    # Once the referrer is soft-deleted, the soft delete goes through; a permanent delete still
    # waits for the referrer to be gone for good.
    client.delete_subject(subject)
    assert client.get_referenced_by(money, 1) == []
    assert client.delete_version(money, 1) == 1
    err = error_of(lambda: client.delete_version(money, 1, permanent=True))
    assert (err.http_status_code, err.error_code) == (422, 42206)
    client.delete_subject(subject, permanent=True)
    assert client.delete_version(money, 1, permanent=True) == 1


# --- deletion ---------------------------------------------------------------------------------


def test_delete_subject(client, subject):
    client.register_schema(subject, avro(V1))
    client.register_schema(subject, avro(V2))
    err = error_of(lambda: client.delete_subject(subject, permanent=True))
    assert (err.http_status_code, err.error_code) == (404, 40405)
    assert client.delete_subject(subject) == [1, 2]
    err = error_of(lambda: client.delete_subject(subject))
    assert (err.http_status_code, err.error_code) == (404, 40404)
    assert client.delete_subject(subject, permanent=True) == [1, 2]
    err = error_of(lambda: client.delete_subject(subject))
    assert (err.http_status_code, err.error_code) == (404, 40401)


def test_delete_version(client, subject):
    client.register_schema(subject, avro(V1))
    client.register_schema(subject, avro(V2))
    assert client.delete_version(subject, 1) == 1
    err = error_of(lambda: client.delete_version(subject, 1))
    assert (err.http_status_code, err.error_code) == (404, 40406)
    err = error_of(lambda: client.delete_version(subject, 2, permanent=True))
    assert (err.http_status_code, err.error_code) == (404, 40407)
    assert client.delete_version(subject, 1, permanent=True) == 1


# --- compatibility ----------------------------------------------------------------------------


def test_test_compatibility(client, subject):
    """The issue's case: the client sends verbose=True and normalize=False."""
    client.register_schema(subject, avro(V1))
    assert client.test_compatibility(subject, avro(V2)) is True
    assert client.test_compatibility(subject, avro(BREAKING), verbose=True) is False
    assert client.test_compatibility(subject, avro(BREAKING), version=1, normalize=True) is False
    raw = client._rest_client.post(f"compatibility/subjects/{subject}/versions/latest?verbose=TRUE", {"schema": BREAKING})
    assert raw["is_compatible"] is False and "currency" in raw["messages"][0]
    # A subject with no versions yet: anything is compatible with its (absent) latest.
    assert client.test_compatibility(fresh(), avro(V1)) is True


def test_test_compatibility_all_versions(client, subject):
    client.set_compatibility(subject, "BACKWARD_TRANSITIVE")
    client.register_schema(subject, avro(V1))
    client.register_schema(subject, avro(V2))
    assert client.test_compatibility_all_versions(subject, avro(V2), verbose=True) is True
    assert client.test_compatibility_all_versions(subject, avro(BREAKING)) is False


def test_set_compatibility(client, subject):
    assert client.set_compatibility(subject, "full") == {"compatibility": "FULL"}
    assert client.get_compatibility(subject) == "FULL"
    err = error_of(lambda: client.set_compatibility(subject, "sideways"))
    assert (err.http_status_code, err.error_code) == (422, 42203)


def test_get_compatibility(client, subject):
    assert client.get_compatibility() in {"BACKWARD", "NONE", "FULL", "FORWARD", "BACKWARD_TRANSITIVE", "FORWARD_TRANSITIVE", "FULL_TRANSITIVE"}
    err = error_of(lambda: client.get_compatibility(subject))
    assert (err.http_status_code, err.error_code) == (404, 40408)


# --- config -----------------------------------------------------------------------------------


def test_set_config(client, subject):
    updated = client.set_config(subject, ServerConfig(compatibility=ConfigCompatibilityLevel.FORWARD))
    assert updated["compatibility"] == "FORWARD"
    err = error_of(lambda: client.set_config(subject, ServerConfig(compatibility_group="application.version")))
    assert (err.http_status_code, err.error_code) == (422, 422)


def test_get_config(client, subject):
    client.set_config(subject, ServerConfig(compatibility_level=ConfigCompatibilityLevel.FULL_TRANSITIVE))
    assert client.get_config(subject).compatibility_level.value == "FULL_TRANSITIVE"
    assert client.get_config().compatibility_level is not None


def test_delete_config(client, subject):
    client.set_config(subject, ServerConfig(compatibility=ConfigCompatibilityLevel.NONE))
    assert client.delete_config(subject).compatibility_level.value == "NONE"
    err = error_of(lambda: client.get_config(subject))
    assert (err.http_status_code, err.error_code) == (404, 40408)
    err = error_of(lambda: client.delete_config(subject))
    assert (err.http_status_code, err.error_code) == (404, 40401)


def test_delete_config_global(client):
    before = client.get_config().compatibility_level.value
    client.set_config(None, ServerConfig(compatibility=ConfigCompatibilityLevel.FULL))
    assert client.delete_config().compatibility_level.value == "FULL"
    assert client.get_config().compatibility_level.value == "BACKWARD", "back to the default"
    client.set_config(None, ServerConfig(compatibility=ConfigCompatibilityLevel(before)))


# --- modes ------------------------------------------------------------------------------------


def test_get_global_mode(client):
    assert client.get_global_mode() == "READWRITE"


def test_update_global_mode(client, subject):
    client.register_schema(subject, avro(V1))
    try:
        assert client.update_global_mode("READONLY") == "READONLY"
        err = error_of(lambda: client.register_schema(fresh(), avro(V1)))
        assert (err.http_status_code, err.error_code) == (422, 42205)
        # Reads still work.
        assert client.get_versions(subject) == [1]
        err = error_of(lambda: client.update_global_mode("SIDEWAYS"))
        assert (err.http_status_code, err.error_code) == (422, 42204)
        # IMPORT needs an empty registry, or force.
        err = error_of(lambda: client.update_global_mode("IMPORT"))
        assert (err.http_status_code, err.error_code) == (422, 42205)
    finally:
        assert client.update_global_mode("READWRITE") == "READWRITE"


def test_update_mode(client, subject):
    client.register_schema(subject, avro(V1))
    assert client.update_mode(subject, "readonly") == "READONLY"
    assert client.get_mode(subject) == "READONLY"
    for write in (
        lambda: client.register_schema(subject, avro(V2)),
        lambda: client.delete_version(subject, 1),
        lambda: client.delete_subject(subject),
        lambda: client.set_compatibility(subject, "NONE"),
    ):
        err = error_of(write)
        assert (err.http_status_code, err.error_code) == (422, 42205)
    assert client.update_mode(subject, "READONLY_OVERRIDE") == "READONLY_OVERRIDE"
    err = error_of(lambda: client.register_schema(subject, avro(V2)))
    assert (err.http_status_code, err.error_code) == (422, 42205)
    assert client.update_mode(subject, "READWRITE") == "READWRITE"
    assert client.register_schema(subject, avro(V2)) > 0


def test_update_mode_import_with_id_and_version(client, subject):
    """IMPORT: what migrating from another registry needs, the source's ids and versions."""
    err = error_of(lambda: client._rest_client.post(f"subjects/{subject}/versions", {"schema": V1, "id": 90001, "version": 1}))
    assert (err.http_status_code, err.error_code) == (422, 42205), "not in import mode"
    assert client.update_mode(subject, "IMPORT") == "IMPORT"
    first, second = own_record(), own_record()
    assert client._rest_client.post(f"subjects/{subject}/versions", {"schema": first, "id": 90001, "version": 3}) == {"id": 90001}
    # Compatibility is not checked in IMPORT mode (the second record shares nothing with the first).
    assert client._rest_client.post(f"subjects/{subject}/versions", {"schema": second, "id": 90002, "version": 7})["id"] == 90002
    # An id cannot be given to another schema.
    err = error_of(lambda: client._rest_client.post(f"subjects/{subject}/versions", {"schema": own_record(), "id": 90001}))
    assert (err.http_status_code, err.error_code) == (422, 42205)
    # A schema this registry knows keeps its one id (a deliberate difference: docs/registry.md).
    err = error_of(lambda: client._rest_client.post(f"subjects/{subject}/versions", {"schema": first, "id": 90003}))
    assert (err.http_status_code, err.error_code) == (422, 42207)
    # Without an id, IMPORT mode refuses.
    err = error_of(lambda: client.register_schema(subject, avro(V2)))
    assert (err.http_status_code, err.error_code) == (422, 42205)
    assert client.update_mode(subject, "READWRITE") == "READWRITE"
    assert client.get_versions(subject) == [3, 7]
    assert client.get_version(subject, 3).schema_id == 90001
    assert json.loads(client.get_schema(90002).schema_str) == json.loads(second)


def test_get_mode(client, subject):
    err = error_of(lambda: client.get_mode(subject))
    assert (err.http_status_code, err.error_code) == (404, 40409)
    assert client._rest_client.get(f"mode/{subject}", {"defaultToGlobal": "True"}) == {"mode": "READWRITE"}


def test_delete_mode(client, subject):
    client.update_mode(subject, "READONLY")
    assert client.delete_mode(subject) == "READONLY"
    err = error_of(lambda: client.get_mode(subject))
    assert (err.http_status_code, err.error_code) == (404, 40409)
    err = error_of(lambda: client.delete_mode(subject))
    assert (err.http_status_code, err.error_code) == (404, 40401)


# --- contexts ---------------------------------------------------------------------------------


def test_get_contexts(client):
    assert client.get_contexts() == ["."]


def test_default_context_qualified_subject(client, subject):
    """`:.:name` is `name` in the default context, for every call that takes a subject."""
    schema_id = client.register_schema(f":.:{subject}", avro(V1))
    assert client.get_latest_version(subject).schema_id == schema_id
    assert client.lookup_schema(f":.:{subject}", avro(V1)).version == 1
    assert client.get_versions(f":.:{subject}") == [1]
    err = error_of(lambda: client.register_schema(f":.staging:{subject}", avro(V1)))
    assert (err.http_status_code, err.error_code) == (422, 42208)


# --- associations (not implemented: see docs/registry.md) -------------------------------------


def test_get_associations_by_resource_name(client):
    err = error_of(lambda: client.get_associations_by_resource_name("orders", "lkc-1"))
    assert (err.http_status_code, err.error_code) == (404, 404)


def test_create_association(client, subject):
    request = AssociationCreateOrUpdateRequest(
        resource_name="orders",
        resource_namespace="lkc-1",
        resource_id="orders-id",
        resource_type="topic",
        associations=[AssociationCreateOrUpdateInfo(subject=subject, association_type="value")],
    )
    err = error_of(lambda: client.create_association(request))
    assert (err.http_status_code, err.error_code) == (404, 404)


def test_delete_associations(client):
    err = error_of(lambda: client.delete_associations("orders-id"))
    assert (err.http_status_code, err.error_code) == (404, 404)


# --- the client object itself -----------------------------------------------------------------


def test_new_client_config_clear_caches_and_close(registry_url, subject):
    client = SchemaRegistryClient.new_client(authenticated(registry_url))
    assert client.config()["url"] == registry_url
    schema_id = client.register_schema(subject, avro(V1))
    client.clear_caches()
    assert client.get_schema(schema_id).schema_str
    client.close()


# --- AvroSerializer / AvroDeserializer --------------------------------------------------------


def test_avro_serializer_and_deserializer_round_trip(registry_url, client):
    topic = f"payments-{uuid.uuid4().hex[:8]}"
    ctx = SerializationContext(topic, MessageField.VALUE)
    serializer = AvroSerializer(client, V1)
    payload = serializer({"id": "p-1", "amount": 1999}, ctx)
    assert payload[0] == 0, "Confluent's magic byte"
    schema_id = int.from_bytes(payload[1:5], "big")
    assert client.get_latest_version(f"{topic}-value").schema_id == schema_id
    # A consumer with a fresh client finds the writer's schema by the id in the frame.
    reader_client = SchemaRegistryClient(authenticated(registry_url))
    assert AvroDeserializer(reader_client)(payload, ctx) == {"id": "p-1", "amount": 1999}
    # Evolution: a v2 producer's data read by a v1 consumer, a v1 producer's by a v2 consumer.
    v2_payload = AvroSerializer(client, V2)({"id": "p-2", "amount": 5, "note": "gift"}, ctx)
    assert client.get_versions(f"{topic}-value") == [1, 2]
    assert AvroDeserializer(reader_client, V1)(v2_payload, ctx) == {"id": "p-2", "amount": 5}
    assert AvroDeserializer(reader_client, V2)(payload, ctx) == {"id": "p-1", "amount": 1999, "note": None}


def test_avro_serializer_with_references_and_lookup_only(registry_url, client):
    topic = f"quotes-{uuid.uuid4().hex[:8]}"
    ctx = SerializationContext(topic, MessageField.VALUE)
    client.register_schema(f"{topic}-money", avro(MONEY))
    quote = record([{"name": "price", "type": "orderflow.test.Money"}], name="Quote")
    schema = avro(quote, references=[SchemaReference("orderflow.test.Money", f"{topic}-money", 1)])
    client.register_schema(f"{topic}-value", schema)
    # auto.register.schemas off: the serializer looks its schema up (POST /subjects/{s}).
    serializer = AvroSerializer(client, schema, conf={"auto.register.schemas": False, "normalize.schemas": True})
    value = {"price": {"minor": 1250, "currency": "EUR"}}
    payload = serializer(value, ctx)
    assert AvroDeserializer(SchemaRegistryClient(authenticated(registry_url)))(payload, ctx) == value
