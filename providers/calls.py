"""``call``: the one entry point above ``providers/`` for generating an image with a model."""

from __future__ import annotations

import httpx

from providers.adapters import adapter_for
from providers.adapters.images import decode_fully as decode_image
from providers.catalogue import ModelSpec
from providers.errors import ErrorClass, ProviderError
from providers.types import GenerationRequest, GenerationResult, TaskHooks


def call(client: httpx.Client, model: ModelSpec, request: GenerationRequest,
         tasks: TaskHooks | None = None, *, decode_fully: bool = False) -> GenerationResult:
    """Generate with ``model``; every failure is a classified ``ProviderError``.

    The model's timeouts apply (``timeout_s`` per read, ``connect_timeout_s`` to connect; BFL's
    whole submit-poll-download within ``timeout_s``); every image is verified (its header and
    structure; with ``decode_fully`` its pixels too, ``providers.adapters.images``);
    ``cost_usd`` is the model's price times the images returned, on success only. A request the
    model cannot serve (``model.can_serve``) fails INVALID_REQUEST before any traffic: the router
    should have skipped the model. ``tasks`` follows an asynchronous wire format's task (BFL): it
    is told the task as soon as it exists, and can resume one instead of submitting again.
    """
    reason = model.can_serve(request)
    if reason is not None:
        raise ProviderError(ErrorClass.INVALID_REQUEST, reason)
    result = adapter_for(model.wire_format).generate(client, model, request, tasks)
    if decode_fully:
        for image in result.images:
            decode_image(model.id, image)
    return result
