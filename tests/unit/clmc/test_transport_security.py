"""Transport security of the CLMC's own clients (CLMC-27): Kafka TLS/SASL and InfluxDB https verification.

Every Kafka client (producer, consumer, admin) carries the configured security; the SASL password is read from its
file and never appears in a config dump, a repr or a log line. InfluxDB https is verified against the given CA, the
system CAs, or (explicitly) not at all.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from clmc.kafka_bus import (
    KafkaEventSink,
    KafkaIngestor,
    MeasurementProducer,
    admin_config,
    consumer_config,
    producer_config,
)
from clmc.kafka_security import KafkaSecurity, KafkaSecuritySettings
from clmc.service import Settings, open_store
from clmc.storage.influx import InfluxStore, tls_context
from flame_control.runtime.tlsgen import write_dev_pki

PASSWORD = "s3cr3t-sasl-pa55word"


def sasl_ssl_settings(tmp_path: Path) -> tuple[KafkaSecuritySettings, dict[str, Path]]:
    pki = write_dev_pki(tmp_path / "pki")
    secret = tmp_path / "kafka.password"
    secret.write_text(PASSWORD + "\n")
    settings = KafkaSecuritySettings(
        security_protocol="SASL_SSL",
        ssl_ca_location=pki["ca"],
        ssl_certificate_location=pki["client_cert"],
        ssl_key_location=pki["client_key"],
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="clmc",
        sasl_password_file=secret,
    )
    return settings, pki


def test_clmc27_producer_consumer_and_admin_configs_carry_tls_and_sasl(tmp_path: Path) -> None:
    settings, pki = sasl_ssl_settings(tmp_path)
    security = settings.resolve()
    expected = {
        "security.protocol": "sasl_ssl",
        "ssl.ca.location": str(pki["ca"]),
        "ssl.certificate.location": str(pki["client_cert"]),
        "ssl.key.location": str(pki["client_key"]),
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "clmc",
        "sasl.password": PASSWORD,  # read from the file, newline stripped
    }
    for conf in (
        producer_config("broker:9093", security),
        consumer_config("broker:9093", "flame-clmc", security=security),
        admin_config("broker:9093", security),
    ):
        assert conf["bootstrap.servers"] == "broker:9093"
        assert {k: conf[k] for k in expected} == expected
    # Idempotence and manual commits are kept next to the security properties.
    assert producer_config("b", security)["enable.idempotence"] is True
    assert consumer_config("b", "g", security=security)["enable.auto.commit"] is False


def test_clmc27_plaintext_default_adds_no_tls_or_sasl_properties() -> None:
    conf = producer_config("127.0.0.1:9092")
    assert conf["security.protocol"] == "plaintext"
    assert not any(k.startswith(("ssl.", "sasl.")) for k in conf)
    assert Settings().kafka_security.resolve() == KafkaSecurity()


def test_clmc27_librdkafka_accepts_the_sasl_ssl_clients_and_no_secret_reaches_logs_or_reprs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """Real confluent-kafka clients are built with the config (librdkafka rejects unknown or unsupported
    properties at construction), against a closed port so nothing connects; the password shows up nowhere."""
    settings, _ = sasl_ssl_settings(tmp_path)
    security = settings.resolve()
    caplog.set_level(logging.DEBUG)
    producer = MeasurementProducer("127.0.0.1:1", security=security)
    sink = KafkaEventSink("127.0.0.1:1", security=security)
    ingestor = KafkaIngestor("127.0.0.1:1", "g", lambda batch: 0, security=security)
    ingestor.run_once(timeout=0.2)
    producer._producer.poll(0.2)
    ingestor.close()
    assert sink.flush(0.1) == 0
    clmc_settings = Settings(kafka_bootstrap="127.0.0.1:1", kafka_security=settings)
    texts = [
        caplog.text,
        *capfd.readouterr(),
        repr(security),
        str(security),
        repr(settings),
        repr(clmc_settings),
        clmc_settings.model_dump_json(),
    ]
    for text in texts:
        assert PASSWORD not in text
    assert "kafka.password" in clmc_settings.model_dump_json()  # the file's path is config, its content is not


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs sasl_mechanism, sasl_username and sasl_password_file"),
        ({"sasl_username": "u"}, "need security_protocol SASL_SSL or SASL_PLAINTEXT"),
        ({"ssl_ca_location": "/ca.pem"}, "need security_protocol SSL or SASL_SSL"),
        ({"security_protocol": "SSL", "ssl_certificate_location": "/c.pem"}, "go together"),
        ({"security_protocol": "TLS"}, "security_protocol"),
        ({"sasl_password": "inline"}, "Extra inputs are not permitted"),  # a password is never a config value
    ],
)
def test_clmc27_inconsistent_kafka_security_is_rejected(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings.model_validate({"kafka_security": fields})


def test_clmc27_unreadable_or_empty_password_file_is_a_clear_error(tmp_path: Path) -> None:
    base = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": "u"}
    missing = KafkaSecuritySettings.model_validate({**base, "sasl_password_file": str(tmp_path / "nope")})
    with pytest.raises(ValueError, match=r"sasl_password_file: cannot read .*nope"):
        missing.resolve()
    (tmp_path / "empty").write_text("\n")
    empty = KafkaSecuritySettings.model_validate({**base, "sasl_password_file": str(tmp_path / "empty")})
    with pytest.raises(ValueError, match="is empty"):
        empty.resolve()


def test_clmc27_influx_tls_context_verifies_against_the_given_ca_or_not_at_all(tmp_path: Path) -> None:
    pki = write_dev_pki(tmp_path / "pki")
    verified = tls_context(pki["ca"], verify=True)
    assert verified.verify_mode is ssl.CERT_REQUIRED and verified.check_hostname
    assert any(c["subject"] == ((("commonName", "flame-dev-ca"),),) for c in verified.get_ca_certs())
    system = tls_context(None, verify=True)
    assert system.verify_mode is ssl.CERT_REQUIRED and system.check_hostname
    unverified = tls_context(pki["ca"], verify=False)
    assert unverified.verify_mode is ssl.CERT_NONE and not unverified.check_hostname


def test_clmc27_influx_tls_options_need_an_https_url(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="https:// influx_url only"):
        Settings(influx_ca_file=tmp_path / "ca.pem")
    with pytest.raises(ValidationError, match="https:// influx_url only"):
        Settings(influx_verify_tls=False)
    with pytest.raises(ValueError, match="https:// URLs only"):
        InfluxStore("http://127.0.0.1:1", "db", ca_file=tmp_path / "ca.pem", retry_for_s=0.01)
    settings = Settings(backend="influxdb", influx_url="https://127.0.0.1:1", influx_retry_s=0.01)
    assert settings.influx_verify_tls  # verification is on unless turned off
    with pytest.raises(Exception, match="influxdb /query failed"):
        open_store(settings, tmp_path)  # the https connection is attempted (and refused: nothing listens)
