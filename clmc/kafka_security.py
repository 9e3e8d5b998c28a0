"""Kafka transport security of the CLMC (CLMC-27): TLS and SASL for every producer, consumer and admin client.

:class:`KafkaSecuritySettings` is the ``services.clmc.kafka_security`` config section; :meth:`~KafkaSecuritySettings.
resolve` reads the SASL password from its file into a :class:`KafkaSecurity`, whose :meth:`~KafkaSecurity.client_config`
gives the librdkafka properties merged into every client's config. The password lives only in that object and in
librdkafka: it is not a config value (only its file path is), it is excluded from ``repr`` and it is never logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True)
class KafkaSecurity:
    """Resolved security of a Kafka client (the default is PLAINTEXT, for a broker on localhost)."""

    security_protocol: Protocol = "PLAINTEXT"
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)

    def client_config(self) -> dict[str, Any]:
        """librdkafka properties for this security (merged into producer, consumer and admin configs)."""
        conf: dict[str, Any] = {"security.protocol": self.security_protocol.lower()}
        optional = {
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
        }
        conf.update({k: v for k, v in optional.items() if v is not None})
        return conf


PLAINTEXT = KafkaSecurity()


class KafkaSecuritySettings(BaseModel):
    """`services.clmc.kafka_security`: how the CLMC's Kafka clients reach the broker."""

    model_config = ConfigDict(extra="forbid")

    #: PLAINTEXT (default, localhost only), SSL (TLS), SASL_SSL (TLS + SASL login) or SASL_PLAINTEXT.
    security_protocol: Protocol = "PLAINTEXT"
    #: CA certificate (PEM) the broker's certificate is checked against (default: the system CAs).
    ssl_ca_location: Path | None = None
    #: Client certificate (PEM) for brokers that require mutual TLS; needs ssl_key_location.
    ssl_certificate_location: Path | None = None
    #: Private key (PEM) of the client certificate.
    ssl_key_location: Path | None = None
    #: SASL mechanism (SASL_* protocols).
    sasl_mechanism: SaslMechanism | None = None
    #: SASL user name.
    sasl_username: str = ""
    #: File holding the SASL password (one line); the password itself is never a config value.
    sasl_password_file: Path | None = None

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecuritySettings:
        sasl = self.security_protocol.startswith("SASL_")
        tls = self.security_protocol in ("SSL", "SASL_SSL")
        if sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password_file):
            raise ValueError(f"{self.security_protocol} needs sasl_mechanism, sasl_username and sasl_password_file")
        if not sasl and (self.sasl_mechanism or self.sasl_username or self.sasl_password_file):
            raise ValueError(
                f"sasl_* settings need security_protocol SASL_SSL or SASL_PLAINTEXT, not {self.security_protocol}"
            )
        if not tls and (self.ssl_ca_location or self.ssl_certificate_location or self.ssl_key_location):
            raise ValueError(f"ssl_* settings need security_protocol SSL or SASL_SSL, not {self.security_protocol}")
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            raise ValueError("ssl_certificate_location and ssl_key_location go together")
        return self

    def resolve(self) -> KafkaSecurity:
        """The client security, with the SASL password read from its file."""
        password = None
        if self.sasl_password_file is not None:
            try:
                password = self.sasl_password_file.read_text().strip()
            except OSError as exc:
                raise ValueError(
                    f"kafka_security.sasl_password_file: cannot read {self.sasl_password_file}: {exc.strerror}"
                ) from None
            if not password:
                raise ValueError(f"kafka_security.sasl_password_file: {self.sasl_password_file} is empty")

        def path(p: Path | None) -> str | None:
            return str(p) if p is not None else None

        return KafkaSecurity(
            self.security_protocol,
            path(self.ssl_ca_location),
            path(self.ssl_certificate_location),
            path(self.ssl_key_location),
            self.sasl_mechanism,
            self.sasl_username or None,
            password,
        )
