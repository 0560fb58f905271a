"""What every HTTP adapter shares: the error boundary, timeouts, keys, JSON and option reading.

``HttpAdapter.generate`` is the edge where foreign exceptions stop: httpx timeouts become
TIMEOUT, every other transport error and every unreadable answer becomes SERVER_ERROR, and a
success without images is a SERVER_ERROR too: a 200 without an image is the model failing, so
the walk goes on to the next model and the breaker counts it. Cost is computed here, on success
only.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar, TypeVar, cast

import httpx

from providers.adapters.classify import error_from_response
from providers.adapters.retry_hints import request_id_from
from providers.catalogue import ModelSpec
from providers.errors import ErrorClass, ProviderError
from providers.types import GeneratedImage, GenerationRequest, GenerationResult, TaskHooks

# What a keyless model sends where its wire format carries a key: an endpoint that needs no key
# ignores it, and one that insists on a non-empty key (as the vendors' SDKs do) accepts it.
KEYLESS_API_KEY = "keyless"
T = TypeVar("T")


class HttpAdapter(ABC):
    wire_format: ClassVar[str]

    def generate(
        self, client: httpx.Client, model: ModelSpec, request: GenerationRequest,
        tasks: TaskHooks | None = None,
    ) -> GenerationResult:
        try:
            result = self._call(client, model, request, tasks or TaskHooks())
        except ProviderError:
            raise
        except httpx.TimeoutException as exc:
            raise ProviderError(
                ErrorClass.TIMEOUT,
                f"{model.id}: no answer within {model.timeout_s:g}s ({type(exc).__name__})",
            ) from None
        except httpx.HTTPError as exc:
            raise ProviderError(
                ErrorClass.SERVER_ERROR, f"{model.id}: transport error {type(exc).__name__}: {exc}"
            ) from None
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ProviderError(
                ErrorClass.SERVER_ERROR,
                f"{model.id}: unreadable answer ({type(exc).__name__}: {exc})",
            ) from None
        if not result.images:
            raise ProviderError(
                ErrorClass.SERVER_ERROR, f"{model.id}: no image in the answer",
                request_id=result.request_id,
            )
        return replace(result, cost_usd=model.price_per_image_usd * len(result.images))

    def _call(self, client: httpx.Client, model: ModelSpec, request: GenerationRequest,
              tasks: TaskHooks) -> GenerationResult:
        """Synchronous wire formats have no task to follow; asynchronous ones override this."""
        return self._generate(client, model, request)

    @abstractmethod
    def _generate(
        self, client: httpx.Client, model: ModelSpec, request: GenerationRequest
    ) -> GenerationResult:
        """Call the vendor; raise ProviderError for every answer that is not an image."""


def timeout_for(model: ModelSpec) -> httpx.Timeout:
    return httpx.Timeout(model.timeout_s, connect=model.connect_timeout_s)


def api_key_for(model: ModelSpec) -> str:
    key = model.api_key()
    if key is not None:
        return key
    if model.keyless:
        return KEYLESS_API_KEY
    raise ProviderError(ErrorClass.AUTH, f"{model.id}: no API key ({model.missing_key_hint})")


def post_json(
    client: httpx.Client, model: ModelSpec, url: str, body: dict[str, Any],
    headers: dict[str, str],
) -> httpx.Response:
    """POST ``body`` as UTF-8 JSON (non-ASCII prompts are sent as they are, not escaped)."""
    return client.post(
        url,
        content=json.dumps(body, ensure_ascii=False).encode("utf-8"),
        headers={"content-type": "application/json; charset=utf-8", **headers},
        timeout=timeout_for(model),
    )


def post_images_generations(
    client: httpx.Client, model: ModelSpec, body: dict[str, Any]
) -> tuple[dict[str, Any], str | None]:
    """``POST {base_url}/images/generations`` with a Bearer key, the shape OpenAI, Seedream,
    Recraft and OpenAI-compatible gateways share. Returns the success body and the request id."""
    response = post_json(
        client, model, f"{model.base_url.rstrip('/')}/images/generations", body,
        {"authorization": f"Bearer {api_key_for(model)}"},
    )
    request_id = request_id_from(response.headers)
    return success_json(response, model, request_id=request_id), request_id


def success_json(
    response: httpx.Response, model: ModelSpec, *, request_id: str | None = None
) -> dict[str, Any]:
    """The JSON object of a 2xx answer; any other answer raises its classified error."""
    if not response.is_success:
        raise error_from_response(response, model.id, request_id=request_id)
    try:
        body = json.loads(response.content)
    except ValueError:
        raise _unreadable(model, response, request_id) from None
    if not isinstance(body, dict):
        raise _unreadable(model, response, request_id)
    return body


def images_or_error(outcomes: list[GeneratedImage | ProviderError]) -> list[GeneratedImage]:
    """Keep the good images of a partly failed answer; with none good, raise the first error."""
    images = [outcome for outcome in outcomes if isinstance(outcome, GeneratedImage)]
    if images or not outcomes:
        return images
    first = outcomes[0]
    assert isinstance(first, ProviderError)
    raise first


def try_image(make: Callable[[], GeneratedImage]) -> GeneratedImage | ProviderError:
    try:
        return make()
    except ProviderError as error:
        return error


def option(model: ModelSpec, name: str, default: T) -> T:
    """A catalogue option of the default's type; a missing or mistyped one gives the default."""
    value = model.options.get(name, default)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return cast(T, float(value))
    return value if type(value) is type(default) else default


def _unreadable(
    model: ModelSpec, response: httpx.Response, request_id: str | None
) -> ProviderError:
    snippet = " ".join(response.text[:120].split())
    return ProviderError(
        ErrorClass.SERVER_ERROR,
        f"{model.id}: unreadable answer (HTTP {response.status_code}, not JSON: {snippet!r})",
        vendor_status=response.status_code,
        request_id=request_id,
    )
