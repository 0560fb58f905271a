"""The simulator's ASGI app: vendor routes, stored-file downloads and the ``/_sim`` controls."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulator.profile import Profile, ProfileError, parse_outage, parse_profile
from simulator.state import SimState
from simulator.vendors import aggregator, bfl, gemini, openai_images, recraft, seedream
from simulator.vendors.common import image_bytes, json_response, read_json

FILE_PREFIXES = ("openai", "ark", "recraft", "aggregator")


def _control_routes(state: SimState) -> list[Route]:
    async def health(_: Request) -> Response:
        return json_response({"status": "ok", "profile": state.profile.name,
                              "elapsed_s": round(state.elapsed_s(), 3)})

    async def reset(_: Request) -> Response:
        state.reset()
        return json_response({"status": "reset", "profile": state.profile.name})

    async def get_profile(_: Request) -> Response:
        return json_response(state.profile.to_dict())

    async def put_profile(request: Request) -> Response:
        body = await read_json(request)
        if body is None:
            return json_response({"detail": "profile: body must be a JSON object"}, 422)
        try:
            state.set_profile(parse_profile(body))
        except ProfileError as exc:
            return json_response({"detail": str(exc)}, 422)
        return json_response(state.profile.to_dict())

    async def add_outage(request: Request) -> Response:
        body = await read_json(request)
        model = (body or {}).pop("model", None)
        if not isinstance(model, str) or not model:
            return json_response({"detail": "outage: 'model' is required"}, 422)
        try:
            outage = state.add_outage(model, parse_outage(body, "outage"))
        except ProfileError as exc:
            return json_response({"detail": str(exc)}, 422)
        return json_response({"model": model, "start_s": outage.start_s, "end_s": outage.end_s,
                              "kind": outage.kind.value, "rate": outage.rate,
                              "clock": "seconds since the profile was set"})

    async def calls(request: Request) -> Response:
        model = request.query_params.get("model") or None
        try:
            since_seq = int(request.query_params.get("since_seq") or 0)
        except ValueError:
            return json_response({"detail": "since_seq must be an integer"}, 422)
        return json_response({"calls": state.ledger.rows(model, max(0, since_seq))})

    async def stats(_: Request) -> Response:
        return json_response({m: s.to_dict() for m, s in state.ledger.stats.items()})

    return [
        Route("/_sim/health", health, methods=["GET"]),
        Route("/_sim/reset", reset, methods=["POST"]),
        Route("/_sim/profile", get_profile, methods=["GET"]),
        Route("/_sim/profile", put_profile, methods=["PUT"]),
        Route("/_sim/outage", add_outage, methods=["POST"]),
        Route("/_sim/calls", calls, methods=["GET"]),
        Route("/_sim/stats", stats, methods=["GET"]),
    ]


def _file_routes(state: SimState) -> list[Route]:
    async def download(request: Request) -> Response:
        file_id, _, _ = request.path_params["name"].partition(".")
        spec = state.files.get(file_id)
        if spec is None:
            return json_response({"error": {"code": "NotFound", "message": "file not found"}}, 404)
        return Response(await image_bytes(spec), media_type=spec.content_type)

    return [Route(f"/{prefix}/files/{{name}}", download, methods=["GET"])
            for prefix in FILE_PREFIXES]


def create_app(profile: Profile, *, seed: int | None = None) -> Starlette:
    """The simulator as an ASGI app, for in-process use (``serve`` runs it under uvicorn)."""
    state = SimState(profile, seed=seed)
    routes = [
        *_control_routes(state),
        *_file_routes(state),
        *openai_images.routes(state),
        *gemini.routes(state),
        *bfl.routes(state),
        *seedream.routes(state),
        *recraft.routes(state),
        *aggregator.routes(state),
    ]
    app = Starlette(routes=routes)
    app.state.sim = state
    return app
