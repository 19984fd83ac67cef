"""`cleanset serve`: the deployments of prefect.yaml, served from this process (no work pool).

prefect.yaml stays the one definition: each deployment of the cleaning flow there (name,
description, parameters, schedules, triggers, concurrency limit) becomes a RunnerDeployment via
`clean_dataset.to_deployment`, and `prefect.serve` runs them. Prefect keeps a served deployment's
trigger automations on the server after the process stops, so a later event would still create
runs nobody executes (they would pile up and all start at the next serve); on shutdown we delete
the automations our deployments own (serve recreates them on the next start).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tasks.errors import CleansetError

# The flows prefect.yaml may deploy: entrypoint -> (module, function, flow name).
FLOWS = {
    "flows/clean.py:clean_dataset": ("flows.clean", "clean_dataset", "cleanset"),
    "flows/folders.py:clean_folder": ("flows.folders", "clean_folder", "cleanset-dataset"),
    "flows/folders.py:nightly": ("flows.folders", "nightly", "cleanset-nightly"),
}
FLOW_ENTRYPOINT = ", ".join(FLOWS)
DEFAULT_PREFECT_FILE = Path(__file__).resolve().parent.parent / "prefect.yaml"



def read_deployment_specs(prefect_file: Path, names: list[str] | None = None) -> list[dict]:
    """The deployments of cleanset's flows declared in prefect.yaml (optionally only `names`)."""
    try:
        config = yaml.safe_load(Path(prefect_file).read_text()) or {}
    except FileNotFoundError:
        raise CleansetError(f"deployment file {prefect_file} does not exist") from None
    except yaml.YAMLError as exc:
        raise CleansetError(f"deployment file {prefect_file} is not valid YAML: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("deployments") or [], list):
        raise CleansetError(f"{prefect_file} must be a mapping with a `deployments:` list")
    specs = [d for d in config.get("deployments") or []
             if isinstance(d, dict) and d.get("entrypoint") in FLOWS]
    nameless = [i for i, d in enumerate(specs) if not d.get("name")]
    if nameless:
        raise CleansetError(f"{prefect_file}: every deployment of {FLOW_ENTRYPOINT} needs a "
                            "`name:`")
    if names:
        unknown = sorted(set(names) - {d.get("name") for d in specs})
        if unknown:
            raise CleansetError(
                f"no deployment named {', '.join(unknown)} in {prefect_file}; it declares: "
                f"{', '.join(d.get('name', '?') for d in specs) or 'none'}")
        specs = [d for d in specs if d.get("name") in names]
    if not specs:
        raise CleansetError(f"{prefect_file} declares no deployment of {FLOW_ENTRYPOINT}")
    return specs


def _schedule(entry: dict[str, Any]):  # noqa: ANN202
    from prefect.schedules import Schedule

    keys = {"cron", "interval", "rrule", "timezone", "anchor_date", "day_or", "active",
            "parameters", "slug"}
    return Schedule(**{k: v for k, v in entry.items() if k in keys and v is not None})


def build_deployments(prefect_file: Path, names: list[str] | None = None) -> list:
    """RunnerDeployments of the cleaning flow, exactly as prefect.yaml declares them."""
    import importlib

    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.events import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    triggers = TypeAdapter(DeploymentTriggerTypes)
    out = []
    for d in read_deployment_specs(prefect_file, names):
        limit = d.get("concurrency_limit")
        if isinstance(limit, dict):
            limit = ConcurrencyLimitConfig(**limit)
        trig = []
        for i, t in enumerate(d.get("triggers") or [], start=1):
            trig.append(triggers.validate_python({"name": f"{d['name']}__automation_{i}", **t}))
        module, function, _ = FLOWS[d["entrypoint"]]
        the_flow = getattr(importlib.import_module(module), function)
        out.append(the_flow.to_deployment(
            name=d["name"], description=d.get("description"), tags=d.get("tags"),
            parameters=d.get("parameters") or {}, version=d.get("version"),
            schedules=[_schedule(s) for s in d.get("schedules") or []],
            triggers=trig, concurrency_limit=limit,
        ))
    return out


def remove_trigger_automations(deployment_names: list[str]) -> int:
    """Delete the automations owned by these deployments (`flow name/deployment name`);
    returns how many there were."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    removed = 0
    with get_client(sync_client=True) as client:
        for name in deployment_names:
            try:
                dep = client.read_deployment_by_name(name)
            except ObjectNotFound:
                continue
            resource = f"prefect.deployment.{dep.id}"
            owned = [a for a in client.read_resource_related_automations(resource)
                     if (a.actions or []) and any(
                         getattr(x, "deployment_id", None) == dep.id for x in a.actions)]
            client.delete_resource_owned_automations(resource)
            removed += len(owned)
    return removed


def serve(prefect_file: Path = DEFAULT_PREFECT_FILE, names: list[str] | None = None,
          landing: Path | None = None, poll_seconds: float = 2.0, limit: int | None = None,
          notify: str | None = None) -> None:
    """Serve the deployments until SIGINT/SIGTERM; watch `landing` when given; on the way out
    stop the watcher, pause the schedules (Prefect does) and delete the trigger automations."""
    from prefect import serve as prefect_serve

    deployments = build_deployments(prefect_file, names)
    if notify:  # kept after serve stops: it creates no runs, only notifications
        ensure_degraded_automation(notify)
        print(f"cleanset serve: {DEGRADED_AUTOMATION} notifies through {notify}", flush=True)
    stop = None
    if landing is not None:
        from flows.watch import start_watcher

        _, stop = start_watcher(landing, poll_seconds)
    try:
        prefect_serve(*deployments, pause_on_shutdown=True, limit=limit,
                      query_seconds=max(poll_seconds, 1.0))
    finally:
        if stop is not None:
            stop.set()
        try:
            n = remove_trigger_automations([f"{d.flow_name}/{d.name}" for d in deployments])
            print(f"cleanset serve: stopped; removed {n} trigger automation(s); deployments "
                  "paused", flush=True)
        except Exception as exc:  # noqa: BLE001 - the server may already be gone
            print(f"cleanset serve: could not remove trigger automations: {exc}", flush=True)


DEGRADED_AUTOMATION = "cleanset-dataset-degraded"
DEGRADED_BODY = (
    "cleanset: dataset {{ event.payload.dataset }} degraded in run {{ event.payload.run_id }}: "
    "{{ event.payload.reason }}")


def degraded_automation(block_document_id: str):  # noqa: ANN201
    """The automation turning `cleanset.dataset.degraded` into a notification through a
    notification block (Slack, e-mail, a webhook, ...)."""
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    from tasks.batches import DEGRADED_EVENT

    return AutomationCore(
        name=DEGRADED_AUTOMATION,
        description="Notify when a cleanset dataset's health falls or a batch is quarantined",
        trigger=EventTrigger(expect={DEGRADED_EVENT},
                             match={"prefect.resource.id": "cleanset.dataset.*"},
                             posture=Posture.Reactive, threshold=1),
        actions=[SendNotification(block_document_id=block_document_id,
                                  subject="cleanset: {{ event.payload.dataset }} degraded",
                                  body=DEGRADED_BODY)])


def ensure_degraded_automation(block: str) -> str:
    """Create (or replace) the degraded-dataset automation for the notification block named
    `block` (`<block type slug>/<block name>`, e.g. slack-webhook/data-team); returns its id."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    type_slug, _, name = block.partition("/")
    if not name:
        raise CleansetError(f"--notify {block!r}: give the notification block as TYPE/NAME, e.g. "
                            "slack-webhook/data-team (`prefect block ls` lists them)")
    with get_client(sync_client=True) as client:
        try:
            doc = client.read_block_document_by_name(name, type_slug)
        except ObjectNotFound:
            raise CleansetError(f"--notify: no block {block!r} on the Prefect server; create "
                                "it first (`prefect block register`, or the UI: Blocks)") from None
        for old in client.read_automations_by_name(DEGRADED_AUTOMATION):
            client.delete_automation(old.id)
        return str(client.create_automation(degraded_automation(str(doc.id))))
