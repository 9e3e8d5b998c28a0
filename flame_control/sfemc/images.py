"""Endpoint image registry (SFEMC-6): the images templates name, what each VIM runs for them, and their clean-up.

Rules: a name is 1-63 lower-case letters, digits, '.', '_' or '-', starting and ending with a letter or digit; the
VIM is ``process``, ``docker`` or ``openstack``; the reference (process command or built-in, docker image, OpenStack
image id) is required; a digest, when given, is ``<algorithm>:<hex>``. Registering the same content again is a
no-op; different content under a registered name replaces it only while no endpoint uses it. Delete and garbage
collection never touch an image in use, nor the built-in ``vod-media-server`` (process VIM, ``builtin:media-server``),
which is always present.

Who uses an image is the controller's knowledge, passed in as ``users``: image name -> endpoint ids. Pure: times are
passed in; persistence is a JSON document (:func:`to_json` / :func:`from_json`) the adapter writes atomically.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from flame_control.api.flame.sfemc.v1 import sfemc_pb2
from flame_control.runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)

VIMS = ("process", "docker", "openstack")
_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$")
_DIGEST = re.compile(r"^[a-z0-9]+:[a-f0-9]{32,}$")
_DOC_VERSION = 1

#: Image users: image name -> ids of the endpoints using it.
Users = Mapping[str, Collection[str]]


@dataclass(frozen=True)
class EndpointImage:
    """Mirror of ``flame.sfemc.v1.EndpointImage`` (without the derived ``in_use``)."""

    name: str
    vim: str
    reference: str
    digest: str = ""
    registered_at: float = 0.0

    def same_content(self, other: EndpointImage) -> bool:
        """True when both describe the same thing (registration time aside)."""
        return (self.name, self.vim, self.reference, self.digest) == (
            other.name,
            other.vim,
            other.reference,
            other.digest,
        )


#: Always present; templates that name no image get it.
BUILTIN = EndpointImage("vod-media-server", "process", "builtin:media-server")


def image_problems(image: EndpointImage, field_prefix: str = "image") -> list[FieldViolation]:
    """Every problem of ``image`` (field paths ``image.name``...)."""
    out = []
    if not _NAME.match(image.name):
        out.append(
            FieldViolation(
                f"{field_prefix}.name",
                "must be 1-63 lower-case letters, digits, '.', '_' or '-', starting and ending with a letter or digit",
            )
        )
    if image.vim not in VIMS:
        out.append(FieldViolation(f"{field_prefix}.vim", f"must be one of {', '.join(VIMS)}"))
    if not image.reference.strip():
        out.append(FieldViolation(f"{field_prefix}.reference", "required"))
    if image.digest and not _DIGEST.match(image.digest):
        out.append(FieldViolation(f"{field_prefix}.digest", "must look like sha256:<hex>"))
    return out


def users_by_image(endpoint_images: Mapping[str, str]) -> dict[str, list[str]]:
    """``{endpoint id: image name}`` turned into the ``users`` mapping (image -> sorted endpoint ids)."""
    out: dict[str, list[str]] = {}
    for endpoint, image in sorted(endpoint_images.items()):
        out.setdefault(image, []).append(endpoint)
    return out


def _in_use(violation_type: str, image: str, users: Collection[str], action: str) -> FailedPrecondition:
    shown = ", ".join(sorted(users)[:10]) + (f" and {len(users) - 10} more" if len(users) > 10 else "")
    return FailedPrecondition(
        [PreconditionViolation(violation_type, f"image/{image}", f"cannot {action}: used by {shown}")]
    )


class ImageRegistry:
    """Registered endpoint images by name, the built-in one included."""

    def __init__(self, images: Iterable[EndpointImage] = ()) -> None:
        self._images: dict[str, EndpointImage] = {BUILTIN.name: BUILTIN}
        for image in images:
            self.register(image, image.registered_at, {})

    def register(self, image: EndpointImage, now: float, users: Users) -> tuple[EndpointImage, bool]:
        """Store ``image`` (registered at ``now``); returns the stored image and whether anything changed.

        InvalidArgument for a bad image; FailedPrecondition (``IN_USE``, naming the users) when a different image of
        that name is in use, or (``BUILTIN``) when it would replace the built-in image."""
        problems = image_problems(image)
        if problems:
            raise InvalidArgument(problems)
        stored = self._images.get(image.name)
        if stored is not None and stored.same_content(image):
            return stored, False
        if image.name == BUILTIN.name:
            raise FailedPrecondition(
                [PreconditionViolation("BUILTIN", f"image/{image.name}", "the built-in image cannot be replaced")]
            )
        using = users.get(image.name, ())
        if stored is not None and using:
            raise _in_use("IN_USE", image.name, using, "replace it with different content")
        new = replace(image, registered_at=now)
        self._images[image.name] = new
        return new, True

    def get(self, name: str) -> EndpointImage:
        """The image called ``name``; NotFound when absent."""
        if name not in self._images:
            raise NotFound("endpoint image", name)
        return self._images[name]

    def __contains__(self, name: object) -> bool:
        return name in self._images

    def images(self) -> list[EndpointImage]:
        """Every image, ordered by name."""
        return [self._images[n] for n in sorted(self._images)]

    def in_use(self, name: str, users: Users) -> int:
        """How many endpoints use ``name``."""
        return len(set(users.get(name, ())))

    def delete(self, name: str, users: Users) -> EndpointImage:
        """Remove ``name``; NotFound when absent, FailedPrecondition (``IN_USE`` naming its users, or ``BUILTIN``)
        when it may not go."""
        image = self.get(name)
        if name == BUILTIN.name:
            raise FailedPrecondition(
                [PreconditionViolation("BUILTIN", f"image/{name}", "the built-in image cannot be deleted")]
            )
        using = users.get(name, ())
        if using:
            raise _in_use("IN_USE", name, using, "delete it")
        del self._images[name]
        return image

    def garbage_collect(self, users: Users, now: float, min_age_s: float) -> list[str]:
        """Remove every image no endpoint uses that was registered at least ``min_age_s`` before ``now`` (never the
        built-in one); returns the names removed, sorted. The age guard keeps an image registered just before the
        template that names it is deployed."""
        gone = [
            n
            for n, img in sorted(self._images.items())
            if n != BUILTIN.name and not users.get(n) and now - img.registered_at >= min_age_s
        ]
        for n in gone:
            del self._images[n]
        return gone


def to_json(registry: ImageRegistry) -> dict[str, Any]:
    """The registry as a JSON document (the built-in image is not stored: it is always there)."""
    return {
        "version": _DOC_VERSION,
        "images": [
            {
                "name": i.name,
                "vim": i.vim,
                "reference": i.reference,
                "digest": i.digest,
                "registered_at": i.registered_at,
            }
            for i in registry.images()
            if i.name != BUILTIN.name
        ],
    }


def from_json(doc: Mapping[str, Any]) -> ImageRegistry:
    """The registry of a :func:`to_json` document; ValueError on an unknown version, unknown keys or a bad image."""
    if doc.get("version") != _DOC_VERSION or set(doc) - {"version", "images"}:
        raise ValueError(f"not an endpoint image document of version {_DOC_VERSION}")
    images = []
    keys = {"name", "vim", "reference", "digest", "registered_at"}
    for i, d in enumerate(doc.get("images", [])):
        if not isinstance(d, dict) or set(d) - keys or not {"name", "vim", "reference"} <= set(d):
            raise ValueError(f"images[{i}]: expected keys {sorted(keys)}")
        image = EndpointImage(
            str(d["name"]),
            str(d["vim"]),
            str(d["reference"]),
            str(d.get("digest", "")),
            float(d.get("registered_at", 0)),
        )
        problems = image_problems(image, f"images[{i}]")
        if problems:
            raise ValueError("; ".join(f"{p.field}: {p.description}" for p in problems))
        images.append(image)
    try:
        return ImageRegistry(images)
    except FailedPrecondition as exc:
        raise ValueError(exc.message) from None


def image_to_proto(image: EndpointImage, in_use: int = 0) -> sfemc_pb2.EndpointImage:
    """The API view of an image."""
    pb = sfemc_pb2.EndpointImage(
        name=image.name, vim=image.vim, reference=image.reference, digest=image.digest, in_use=in_use
    )
    pb.registered_at.FromNanoseconds(int(image.registered_at * 1e9))
    return pb


def image_from_proto(pb: sfemc_pb2.EndpointImage) -> EndpointImage:
    """The image of a RegisterEndpointImage request (``registered_at`` and ``in_use`` are the registry's)."""
    return EndpointImage(pb.name.strip(), pb.vim.strip().lower(), pb.reference.strip(), pb.digest.strip().lower())
