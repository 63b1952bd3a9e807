"""The provider registry: one declaration per provider, read by configuration, wiring, the jobs API, the local stack
and the tests.

What varies per provider is declared here once (:class:`ProviderSpec`): its adapter, whether it needs an API key,
its default base URL and result hosts, the tasks and options it offers, its default call ceilings and check cadence,
and the emulator the local stack runs for it. Adding a provider is: its adapter module, its emulator, one entry in
:data:`PROVIDERS`, and its specific tests (the adapter contract suite, ``tests/unit/test_provider_contract.py``, runs
every entry).

Adapters are named, not imported: a function loads only the adapters of the providers its stack enables.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from faceswap.faces import DETECT_CROP, ISOLATE_COMPOSITE, NATIVE
from faceswap.media import VideoLimits

FACE_INDEX_OPTIONS = frozenset({"swap_faces_index", "target_faces_index"})
MIB = 1024 * 1024


@dataclass(frozen=True)
class ProviderSpec:
    """One provider's declaration.

    Attributes
    ----------
    name
        Its name in requests, job rows, callback routes and configuration (``piapi``).
    adapter
        ``"module:Class"`` of its :class:`faceswap.ports.Provider` adapter.
    api_key
        Whether it needs an API key (the secret ``<stack name>/providers/<name>``).
    base_url
        Its API's default base URL (``""``: none; the deployment must give one, as for the self-hosted engine).
    result_hosts
        Hosts its result URLs may come from by default (``*.example.com`` matches subdomains; empty: the base URL's
        host).
    tasks
        The tasks it offers; a request for another is refused before any call.
    options
        The request options its tasks take.
    per_second, per_hour
        Default ceilings of calls per second and per hour (0: none), overridable with ``ProviderRateLimits``.
    poll_delays
        Default check cadence ``(first, factor, maximum)`` in seconds, overridable with ``PollDelays``.
    emulator
        ``"module:Class"`` of the local stack's emulator for it (``None``: the local stack runs the real thing).
    emulator_poll_delays
        The check cadence the local stack uses with its emulator (quicker than the real provider's).
    contract
        Where its HTTP contract is written down (``providers.md`` section and the provider's documentation).
    face_choice
        How it takes the faces a face map chose (:data:`faceswap.faces.NATIVE`, ``DETECT_CROP`` or
        ``ISOLATE_COMPOSITE``); ``None``: a request with a face map is refused ``provider_rejected`` before any call.
    video_tasks
        The tasks it offers on a target video (empty: a video job is refused ``provider_rejected`` before any call).
    video_limits
        What its video tasks take; every target video is fitted to them (:func:`faceswap.media.fit`).
    video_poll_delays
        Check cadence of its video tasks (slower than images: they run for minutes).
    video_face_choice
        How its video task takes the faces a face map chose in the first frame (``None``: it takes none, and a video
        job with a face map is refused ``provider_rejected`` before any call).
    video_options
        The request options its video task takes besides the pipeline's own ``trim`` (a video job with another is
        refused ``provider_rejected`` before any call).
    """

    name: str
    adapter: str
    api_key: bool
    base_url: str
    result_hosts: tuple[str, ...]
    tasks: tuple[str, ...]
    options: frozenset[str]
    poll_delays: tuple[float, float, float]
    per_second: int = 0
    per_hour: int = 0
    emulator: str | None = None
    emulator_poll_delays: tuple[float, float, float] = (2.0, 1.5, 10.0)
    contract: str = ""
    face_choice: str | None = None
    video_tasks: tuple[str, ...] = ()
    video_limits: VideoLimits | None = None
    video_poll_delays: tuple[float, float, float] = (30.0, 1.5, 120.0)
    video_face_choice: str | None = None
    video_options: frozenset[str] = frozenset()

    def adapter_class(self) -> Any:
        """The adapter's class, imported now."""
        return _load(self.adapter)

    def emulator_class(self) -> Any:
        """The emulator's class, imported now (``faceswap_local`` must be importable: the local stack only)."""
        if self.emulator is None:
            raise LookupError(f"{self.name} has no emulator")
        return _load(self.emulator)


PROVIDERS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        ProviderSpec(
            name="piapi",
            adapter="faceswap.providers.piapi:PiAPIProvider",
            api_key=True,
            base_url="https://api.piapi.ai",
            result_hosts=("img.theapi.app", "*.piapi.ai"),
            tasks=("face-swap", "multi-face-swap"),
            options=FACE_INDEX_OPTIONS,
            per_second=5,
            # PiAPI's own CLI polls from 1 s, x1.5, up to 30 s; as a webhook safety net the first check is later.
            poll_delays=(30.0, 1.5, 120.0),
            emulator="faceswap_local.emulators.piapi:PiAPIEmulator",
            contract="providers.md §1; https://piapi.ai/docs/faceswap-api/faceswap",
            face_choice=ISOLATE_COMPOSITE,
            video_tasks=("face-swap",),
            # providers.md §7: "Maximum 600 frames per video", "standard MP4"; the legacy page and PiAPI's n8n node
            # say at most 10 MB and 720p. Sent within all of them.
            video_limits=VideoLimits(max_long_side=1280, max_short_side=720, max_frames=600, max_bytes=10 * MIB),
            video_options=FACE_INDEX_OPTIONS,  # providers.md §7: swap_faces_index, target_faces_index (optional)
        ),
        ProviderSpec(
            name="ailabapi",
            adapter="faceswap.providers.ailabapi:AILabAPIProvider",
            api_key=True,
            base_url="https://www.ailabapi.com",
            result_hosts=("*.ailabapi.com", "*.ailabtools.com", "*.aliyuncs.com"),
            tasks=("face-swap",),
            options=frozenset(),
            per_second=5,
            # AILabAPI recommends querying every 5 seconds: first check after 5 s, then every 5 s (factor 1).
            poll_delays=(5.0, 1.0, 5.0),
            emulator="faceswap_local.emulators.ailabapi:AILabAPIEmulator",
            emulator_poll_delays=(1.0, 1.5, 5.0),
            contract="providers.md §2",
            face_choice=ISOLATE_COMPOSITE,
        ),
        ProviderSpec(
            name="crun",
            adapter="faceswap.providers.crun:CRUNProvider",
            api_key=True,
            base_url="https://api.crun.ai",
            result_hosts=("*.crun.ai",),
            tasks=("face-swap", "multi-face-swap"),
            options=FACE_INDEX_OPTIONS,
            per_second=5,
            # A safety net behind the callback: first check after 30 s, x1.5, at most every 120 s.
            poll_delays=(30.0, 1.5, 120.0),
            emulator="faceswap_local.emulators.crun:CRUNEmulator",
            contract="providers.md §3",
            face_choice=DETECT_CROP,
            video_tasks=("face-swap",),
            # providers.md §7: CRUN publishes no video limits; PiAPI's are used, so a video that works at one works
            # at the other (a failover moves a job between them).
            video_limits=VideoLimits(max_long_side=1280, max_short_side=720, max_frames=600, max_bytes=10 * MIB),
        ),
        ProviderSpec(
            name="aiphotocraft",
            adapter="faceswap.providers.aiphotocraft:AIPhotoCraftProvider",
            api_key=True,
            base_url="https://aiapi.aiphotocraft.com",
            result_hosts=("*.aiphotocraft.com",),
            tasks=("face-swap", "multi-face-swap", "same-image-swap"),
            options=FACE_INDEX_OPTIONS | {"swap_index", "enhance"},
            per_second=2,
            per_hour=180,
            # Slow, because polls spend the hourly quota: first check after 15 s, x1.5, at most every 5 minutes.
            poll_delays=(15.0, 1.5, 300.0),
            emulator="faceswap_local.emulators.aiphotocraft:AIPhotoCraftEmulator",
            emulator_poll_delays=(1.0, 1.5, 5.0),
            contract="providers.md §4",
            face_choice=ISOLATE_COMPOSITE,
        ),
        ProviderSpec(
            name="selfhosted",
            adapter="faceswap.providers.selfhosted:SelfhostedProvider",
            api_key=False,
            base_url="",
            result_hosts=(),
            tasks=("face-swap", "multi-face-swap"),
            options=FACE_INDEX_OPTIONS,
            # Swaps take well under a second: first check after 5 s (a webhook usually came first), up to 30 s.
            poll_delays=(5.0, 1.5, 30.0),
            contract="engine/faceswap_engine/server.py",
            face_choice=NATIVE,
            video_tasks=("face-swap",),
            # The engine swaps frame by frame on the CPU (about 0.3 s a frame for a 720p close-up on one core:
            # make bench): up to 1080p and 1800 frames (a minute at 30 fps) keeps a task within 10 minutes.
            video_limits=VideoLimits(max_long_side=1920, max_short_side=1080, max_frames=1800, max_bytes=200 * MIB),
            video_poll_delays=(10.0, 1.5, 60.0),
            video_face_choice=NATIVE,  # the chosen faces' boxes in the first frame; the engine follows each
            video_options=FACE_INDEX_OPTIONS,  # the target's counted in the first frame; the engine follows each
        ),
    )
}
"""Every provider the pipeline can use, by name."""


def spec(name: str) -> ProviderSpec:
    """The declaration of provider ``name``.

    Raises
    ------
    KeyError
        No such provider.
    """
    return PROVIDERS[name]


def offers(name: str, task: str) -> bool:
    """Whether provider ``name`` (known to the registry) offers ``task``."""
    return name in PROVIDERS and task in PROVIDERS[name].tasks


def video_limits(name: str) -> VideoLimits | None:
    """What provider ``name``'s video tasks take (``None``: it has none, or is unknown)."""
    return PROVIDERS[name].video_limits if name in PROVIDERS and PROVIDERS[name].video_tasks else None


def video_refusal(name: str, *, task: str, options: Iterable[str], among: Iterable[str], none: str) -> str | None:
    """Why provider ``name`` cannot take a video request for ``task`` with ``options``, as the ``provider_rejected``
    message (it has no such video task, or its video task does not take an option), or ``None``. The message names
    the providers of ``among`` that can (``none`` when none can): the jobs API's enabled ones, or a function's
    configured ones."""
    spec = PROVIDERS.get(name)
    if spec is None or task not in spec.video_tasks:
        takers = sorted(p for p in among if video_limits(p))
        offered = ", ".join(spec.tasks) if spec else "none"
        return (
            f"Provider {name!r} has no video task (it offers {offered} on images); providers with one: "
            f"{', '.join(takers) or none}."
        )
    if refused := _video_options_refused(name, options):
        return _video_options_message(name, refused)
    return None


def face_map_refusal(name: str, *, video: bool, among: Iterable[str], none: str) -> str | None:
    """Why provider ``name`` cannot take a face map (on a target video when ``video``), as the ``provider_rejected``
    message naming the providers of ``among`` that can (``none`` when none can), or ``None``."""
    choice = video_face_choice if video else face_choice
    if choice(name) is not None:
        return None
    takers = sorted(p for p in among if choice(p))
    return (
        f"Provider {name!r} cannot choose faces by a reference photo{' in a video' if video else ''}; providers "
        f"that can: {', '.join(takers) or none}."
    )


def _video_options_refused(name: str, options: Iterable[str]) -> list[str]:
    """The ``options`` of a video request that provider ``name``'s video task does not take (``trim`` is the
    pipeline's own), sorted; empty when it takes them all."""
    taken = PROVIDERS[name].video_options if name in PROVIDERS else frozenset()
    return sorted(option for option in options if option != "trim" and option not in taken)


def _video_options_message(name: str, refused: list[str]) -> str:
    """The ``provider_rejected`` message for a video request with options ``refused`` by provider ``name``."""
    takers = sorted(p.name for p in PROVIDERS.values() if p.video_tasks and set(refused) <= p.video_options)
    return (
        f"Provider {name!r}'s video task takes no option {', '.join(refused)}; providers whose video task takes "
        f"{'it' if len(refused) == 1 else 'them'}: {', '.join(takers) or 'none'}."
    )


def video_face_choice(name: str) -> str | None:
    """How provider ``name``'s video task takes a face map's chosen faces (``None``: it takes none, or is unknown)."""
    return PROVIDERS[name].video_face_choice if name in PROVIDERS else None


def face_choice(name: str) -> str | None:
    """How provider ``name`` takes a face map's chosen faces (``None``: it takes none, or is unknown)."""
    return PROVIDERS[name].face_choice if name in PROVIDERS else None


def _load(reference: str) -> Any:
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)
