"""One LiteLLM process of the outage benchmark: a ``litellm.Router`` over the default route's
models as ``openai/<model>`` deployments on the simulator's OpenAI-compatible aggregator, and
threads calling ``router.image_generation`` as jobs are released, the way imagequeue's worker
threads take jobs.

    python -m benchmarks.outage.litellm_worker CONFIG_JSON

Prints ``ready`` once the Router is built, reads the start time (epoch seconds) on stdin, then
prints one JSON list: ``[submit_s, latency_s, ok, served_by]`` per job.
"""

from __future__ import annotations

import importlib
import json
import os
import queue
import sys
import threading
import time
from typing import Any

# No fetch of LiteLLM's remote model cost map: the benchmark talks to loopback only.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")


def build_router(config: dict[str, Any]) -> Any:
    """The Router: one deployment per model (``model_info.id`` its name, so processes sharing a
    Redis share its cooldowns), fallbacks from the first model to the rest in route order."""
    litellm: Any = importlib.import_module("litellm")
    models: list[str] = config["models"]
    model_list = [{"model_name": name,
                   "litellm_params": {"model": f"openai/{name}", "api_base": config["api_base"],
                                      "api_key": "simulator", "timeout": config["timeouts"][name]},
                   "model_info": {"id": name}} for name in models]
    redis_args = ({"redis_host": config["redis"]["host"], "redis_port": config["redis"]["port"]}
                  if config["redis"] else {})
    return litellm.Router(model_list=model_list, fallbacks=[{models[0]: models[1:]}],
                          **config["router"], **redis_args)


def served_by(response: Any) -> str | None:
    name = (getattr(response, "_hidden_params", None) or {}).get("litellm_model_name") or ""
    return str(name).removeprefix("openai/") or None


def main() -> None:
    config = json.loads(sys.argv[1])
    router = build_router(config)
    jobs: queue.Queue[tuple[int, float] | None] = queue.Queue()
    results: list[list[Any]] = []
    lock = threading.Lock()

    def take() -> None:
        while (job := jobs.get()) is not None:
            k, submit_s = job
            ok, by = False, None
            try:
                by = served_by(router.image_generation(
                    model=config["models"][0], prompt=f"{config['tag']} {k}", size="1024x1024"))
                ok = True
            except Exception as exc:  # every fallback failed: the job failed
                by = type(exc).__name__
            with lock:
                results.append([submit_s, time.time() - submit_s, ok, by])

    threads = [threading.Thread(target=take) for _ in range(config["threads"])]
    print("ready", flush=True)
    start_s = float(sys.stdin.readline())
    for thread in threads:
        thread.start()
    for k, offset in enumerate(config["offsets"]):
        time.sleep(max(0.0, start_s + offset - time.time()))
        jobs.put((k, start_s + offset))
    for _ in threads:
        jobs.put(None)
    for thread in threads:
        thread.join()
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
