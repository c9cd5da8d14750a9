"""The deployment files (deploy/): valid against the Compose spec and Kubernetes' own schemas,
every RAGPACER_* variable a setting whose value the loader accepts, and every address the app
is given served by a service of the same files, on the port it listens on."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import yaml

from ragpacer.pipeline.core.settings import Settings, load_settings, names_a_setting

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.30.0"


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def k8s() -> list[dict[str, Any]]:
    return [doc for f in sorted((DEPLOY / "k8s").glob("*.yaml"))
            for doc in yaml.safe_load_all(f.read_text()) if doc]


def dockerfile_env() -> dict[str, str]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    return dict(re.findall(r"(RAGPACER_\w+)=(\S+)", text))


def mounted(env: dict[str, str], secrets: dict[str, str], folder: Path) -> dict[str, str]:
    """The environment with its secrets as the platform mounts them: one file each, in the
    folder RAGPACER_SECRETS_DIR names."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in secrets.items():
        (folder / name).write_text(value + "\n")
    return {**env, "RAGPACER_SECRETS_DIR": str(folder)}


def ragpacer_env_compose(folder: Path) -> dict[str, str]:
    spec = compose()
    env = dict(spec["services"]["ragpacer"]["environment"])
    assert env["RAGPACER_SECRETS_DIR"] == "/run/secrets"  # where compose mounts its secrets
    names = spec["services"]["ragpacer"]["secrets"]
    return mounted(env, dict.fromkeys(names, '["a-key"]'), folder)


def ragpacer_env_k8s(folder: Path) -> dict[str, str]:
    docs = k8s()
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] ==
                  "ragpacer")["data"]
    secret = next(d for d in docs if d["kind"] == "Secret")["stringData"]
    app = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] ==
               "ragpacer")["spec"]["template"]["spec"]["containers"][0]
    mount = next(m for m in app["volumeMounts"] if m["name"] == "secrets")
    assert config["RAGPACER_SECRETS_DIR"] == mount["mountPath"]
    return mounted(dict(config), secret, folder)


def test_compose_follows_the_compose_specification() -> None:
    out = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                          "vendor.compose-spec", str(DEPLOY / "compose.yaml")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_kubernetes_manifests_follow_the_api_schemas() -> None:
    for doc in k8s():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_every_variable_is_a_setting_and_its_value_loads(tmp_path: Path) -> None:
    for env in (ragpacer_env_compose(tmp_path / "c"), ragpacer_env_k8s(tmp_path / "k"),
                dockerfile_env()):
        assert [k for k in env if not names_a_setting(k)] == []
        settings = load_settings(ROOT / "ragpacer.yaml", environ=env)
        assert isinstance(settings, Settings)
    for env in _container_envs():
        assert [k for k in env if k.startswith("RAGPACER_") and not names_a_setting(k)] == []


def _container_envs() -> list[dict[str, str]]:
    out = [dict(s.get("environment") or {}) for s in compose()["services"].values()]
    for doc in k8s():
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []):
            out.append({e["name"]: e.get("value", "") for e in c.get("env", [])})
    return out


def test_images_are_pinned() -> None:
    images = [s["image"] for s in compose()["services"].values() if "image" in s]
    for doc in k8s():
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        images += [c["image"] for c in spec.get("containers", [])]
    assert images and all(":" in i and not i.endswith(":latest") for i in images), images


def _addresses(settings: Settings) -> list[str]:
    model = settings.llm.model("default")
    return [settings.redis_url or "", settings.retrieval.qdrant_url or "",
            settings.tracing.endpoint or "", *model.endpoints]


def test_compose_addresses_reach_a_service_on_its_port(tmp_path: Path) -> None:
    spec = compose()
    services = spec["services"]
    settings = load_settings(ROOT / "ragpacer.yaml", environ=ragpacer_env_compose(tmp_path))
    for address in _addresses(settings):
        url = urlsplit(address)
        assert url.hostname in services, address
        service = services[url.hostname]
        listens = {int(p) for p in service.get("expose", [])}
        command = service.get("command") or []
        if "--port" in command:
            listens.add(int(command[command.index("--port") + 1]))
        assert url.port in listens, (address, listens)
    app = services["ragpacer"]
    port = str(settings.server.port)
    assert app["ports"] == [port] and f":{port}/readyz" in json.dumps(app["healthcheck"])
    assert app["environment"]["RAGPACER_SERVER__WORKERS"] == str(settings.server.workers)


def test_kubernetes_addresses_reach_a_service_on_its_port(tmp_path: Path) -> None:
    docs = k8s()
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    sets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "StatefulSet"}
    settings = load_settings(ROOT / "ragpacer.yaml", environ=ragpacer_env_k8s(tmp_path))
    for address in _addresses(settings):
        url = urlsplit(address)
        parts = (url.hostname or "").split(".")
        if len(parts) == 2:  # <statefulset>-<n>.<headless service>: one pod of a set
            pod, service = parts
            name, _, n = pod.rpartition("-")
            assert sets[name]["spec"]["serviceName"] == service, address
            assert int(n) < sets[name]["spec"]["replicas"], address
        else:
            service = parts[0]
        ports = [p["port"] for p in services[service]["spec"]["ports"]]
        assert url.port in ports, (address, ports)
    app = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] ==
               "ragpacer")["spec"]["template"]["spec"]["containers"][0]
    assert app["ports"][0]["containerPort"] == settings.server.port
    assert app["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    for doc in docs:  # every named targetPort is a port some container declares
        if doc["kind"] != "Service":
            continue
        selected = [d for d in docs if d.get("spec", {}).get("template", {}).get(
            "metadata", {}).get("labels") == doc["spec"]["selector"]]
        names = {p["name"] for d in selected
                 for c in d["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for p in doc["spec"]["ports"]:
            assert p["targetPort"] in names, (doc["metadata"]["name"], p)
