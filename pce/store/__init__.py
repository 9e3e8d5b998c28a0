"""Durable PCE control state (issue 13, SFR-20): one small key-value interface, two backends.

``base.StateStore`` is what the PCE core's adapters persist through: the embedded default is a crash-safe local file
store (``file_store``), deployments use etcd (``etcd_store``). Keys are ``/``-separated strings under a prefix the
backend owns; values are opaque bytes (serialised by the caller). Every ``apply`` is atomic: after a crash either all
of its puts and deletes are visible or none are.
"""
