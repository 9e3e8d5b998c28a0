"""The InfluxDB backend over https against a real influxd serving TLS (CLMC-27: personal data in transit to storage).

With the private CA the store works end to end; without it the certificate is refused (no silent fallback to an
unverified link); ``verify_tls: false`` is the explicit lab-only escape.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clmc.service import Settings, open_store
from clmc.storage.base import Selection, SeriesData, StorageError
from clmc.storage.influx import InfluxStore
from flame_control.runtime.tlsgen import write_dev_pki
from tests.support.influxdb import start_influxd
from tests.support.procs import ProcessGroup

S = 1_000_000_000
T0 = 1_700_000_000 * S
pytestmark = pytest.mark.influxdb


def test_clmc27_influx_https_verified_with_the_private_ca_refused_without_it(
    tmp_path: Path, procs: ProcessGroup
) -> None:
    pki = write_dev_pki(tmp_path / "pki")
    server = start_influxd(procs, tmp_path, tls=(pki["server_cert"], pki["server_key"]))
    assert server.url.startswith("https://")
    settings = Settings(backend="influxdb", influx_url=server.url, influx_ca_file=pki["ca"], influx_database="tls")
    store = open_store(settings, tmp_path)
    assert isinstance(store, InfluxStore)
    store.write([SeriesData("nap_http", (("flame_ue", "ue-1"),), [T0], {"requests": [3]})])
    assert store.count(Selection("nap_http")) == 1
    store.close()
    # The system CAs do not know the private CA: refused at the handshake, reported (not retried into success).
    with pytest.raises(StorageError, match="CERTIFICATE_VERIFY_FAILED"):
        InfluxStore(server.url, "tls", retry_for_s=0.2)
    # Plain http to the https port is not an option either.
    with pytest.raises(StorageError):
        InfluxStore(server.url.replace("https", "http"), "tls", retry_for_s=0.2)
    # Explicitly unverified (lab only) still encrypts and works.
    lab = InfluxStore(server.url, "tls", verify_tls=False)
    assert lab.count(Selection("nap_http")) == 1
    lab.close()
