"""The Helm chart, rendered by Helm's own engine and checked the way a cluster would check it.

Each case is rendered with helm-python-sdk (Helm v4 as a library), every object is validated
against the Kubernetes 1.30 JSON schemas in strict mode (unknown fields fail), the rendered
config.yaml is run through `goalkeeper check-config` with the environment the pod would get, and
the alert rules go through promtool. There is no cluster here: admission (Pod Security), the
kubelet's probes and the Prometheus Operator's CRD schemas are not exercised.
"""

from __future__ import annotations

import base64
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from helm_python.chart import Chart, lint
from helm_python.errors import HelmError
from pydantic import BaseModel

from goalkeeper.config import Settings, secret_keys

CHART = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "goalkeeper"
RELEASE, NAMESPACE, KUBE_VERSION = "goalkeeper", "security", "1.30"
CRD_GROUP = "monitoring.coreos.com/"  # no JSON schema offline: checked by promtool and by hand


def values_file(name: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / name).read_text(encoding="utf-8"))
    return values


# What the operator's own Secret holds in the prod example (values-prod.yaml names it).
OPERATOR_SECRETS = {
    "goalkeeper-secrets": {
        "fleio-token": "fleio-tok-prod",
        "smtp-password": "smtp-pw-prod",
        "telegram-token": "987654:tg-tok-prod",
        "admin-token": "admin-tok-prod",
    }
}
# What the stage example's install command adds with --set and --set-file.
STAGE_COMMAND_LINE = {
    "secrets": {"values": {"fleioToken": "fleio-tok-stage", "smtpPassword": "smtp-pw-stage"}},
    "openstack": {"cloudsYaml": "clouds:\n  stage: {auth: {auth_url: https://keystone.test}}\n"},
}
CI_VALUES = [f"ci/{path.name}" for path in sorted((CHART / "ci").glob("*-values.yaml"))]
CASES: dict[str, dict[str, Any]] = {
    name.removeprefix("ci/").removesuffix("-values.yaml"): values_file(name) for name in CI_VALUES
}
CASES["prod"] = values_file("values-prod.yaml")
CASES["stage"] = values_file("values-stage.yaml") | STAGE_COMMAND_LINE
SCOPE = {"config": {"scan": {"allowed_networks": ["203.0.113.0/24"]}}}


@pytest.fixture(scope="module")
def chart() -> Iterator[Chart]:
    with Chart.load(CHART) as loaded:
        yield loaded


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in override.items():
        both = isinstance(value, dict) and isinstance(result.get(key), dict)
        result[key] = merged(result[key], value) if both else value
    return result


def render(chart: Chart, values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every rendered object, keyed by "Kind/name". The chart needs the cloud's ranges."""
    values = merged(SCOPE, values)
    objects: dict[str, dict[str, Any]] = {}
    for path, text in chart.render(values, name=RELEASE, namespace=NAMESPACE).items():
        if path.endswith("NOTES.txt"):
            continue
        for obj in yaml.safe_load_all(text):
            if obj:
                objects[f"{obj['kind']}/{obj['metadata']['name']}"] = obj
    return objects


def pod_spec(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = objects[f"Deployment/{RELEASE}"]["spec"]["template"]["spec"]
    return spec


def container(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (only,) = pod_spec(objects)["containers"]
    result: dict[str, Any] = only
    return result


def rendered_config(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(objects[f"ConfigMap/{RELEASE}"]["data"]["config.yaml"])
    return config


def pod_environment(objects: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The container's environment as the kubelet would resolve it from the Secrets."""
    secrets = {name: dict(data) for name, data in OPERATOR_SECRETS.items()}
    for key, obj in objects.items():
        if key.startswith("Secret/"):
            data = obj.get("data") or {}
            secrets[obj["metadata"]["name"]] = {
                k: base64.b64decode(v).decode() for k, v in data.items()
            }
    env: dict[str, str] = {}
    for item in container(objects)["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        value = secrets.get(ref["name"], {}).get(ref["key"])
        if value is None:
            assert ref.get("optional"), f"{item['name']} refers to a missing key {ref}"
            continue
        env[item["name"]] = value
    return env


def leaf_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            keys |= leaf_keys(kind, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def value_leaves(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    leaves: dict[str, Any] = {}
    for name, value in node.items():
        if isinstance(value, dict):
            leaves |= value_leaves(value, f"{prefix}{name}.")
        else:
            leaves[f"{prefix}{name}"] = value
    return leaves


def test_values_config_mirrors_every_settings_key_except_secrets() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    expected = leaf_keys(Settings) - set(secret_keys())
    found = set(value_leaves(values["config"]))
    assert found == expected, (
        f"missing from values.yaml: {sorted(expected - found)}; "
        f"unknown to Settings: {sorted(found - expected)}"
    )


def test_values_config_defaults_are_the_daemons_except_where_the_chart_says_why() -> None:
    deliberate = {
        "state.url": "sqlite+aiosqlite:////var/lib/goalkeeper/state.db",  # on the volume
        "logging.format": "json",  # a pod's log is read by machines
    }
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    chart_defaults = value_leaves(values["config"])
    daemon_defaults = value_leaves(Settings().model_dump(mode="json"))
    differing = {
        key: (chart_defaults[key], daemon_defaults[key])
        for key in chart_defaults
        if chart_defaults[key] != daemon_defaults[key] and key not in deliberate
    }
    assert differing == {}
    assert {key: chart_defaults[key] for key in deliberate} == deliberate


@pytest.mark.parametrize("case", CASES)
def test_chart_lints_clean(case: str) -> None:
    result = lint(CHART, CASES[case], strict=True, namespace=NAMESPACE, kube_version=KUBE_VERSION)
    worrying = [m for m in result["messages"] if m["severity"] >= 2]  # 2 warning, 3 error
    assert result["errors"] == []
    assert worrying == []


@pytest.mark.parametrize("case", CASES)
def test_every_object_is_valid_kubernetes(chart: Chart, case: str) -> None:
    objects = render(chart, CASES[case])
    assert {"Deployment", "ConfigMap", "Service", "ServiceAccount"} <= {
        obj["kind"] for obj in objects.values()
    }
    for key, obj in objects.items():
        if obj["apiVersion"].startswith(CRD_GROUP):
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{case}: {key}: {err.message} at {list(err.path)}")


def check_config(
    objects: dict[str, dict[str, Any]], folder: Path
) -> subprocess.CompletedProcess[str]:
    """`goalkeeper check-config` on the ConfigMap's files, with the pod's GOALKEEPER_ variables."""
    config_dir, workdir = folder / "etc-goalkeeper", folder / "work"
    config_dir.mkdir(parents=True)
    workdir.mkdir(parents=True)
    for name, text in objects[f"ConfigMap/{RELEASE}"]["data"].items():
        (config_dir / name).write_text(text, encoding="utf-8")
    env = {k: v for k, v in pod_environment(objects).items() if k.startswith("GOALKEEPER_")}
    env["GOALKEEPER_CONFIG"] = str(config_dir / Path(env["GOALKEEPER_CONFIG"]).name)
    return subprocess.run(
        [sys.executable, "-m", "goalkeeper", "check-config"],
        cwd=workdir,
        # PYTHONPATH, where set, so the code under test answers, not an installed copy.
        env={k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ} | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("case", CASES)
def test_rendered_config_passes_check_config(chart: Chart, case: str, tmp_path: Path) -> None:
    objects = render(chart, CASES[case])
    result = check_config(objects, tmp_path)
    assert result.returncode == 0, result.stderr
    effective = yaml.safe_load(result.stdout)
    assert effective["scan"]["privileged"] is (CASES[case].get("securityProfile") != "restricted")
    secrets = [
        urlsplit(value).password if name == "GOALKEEPER_STATE__URL" else value
        for name, value in pod_environment(objects).items()
        if name.startswith("GOALKEEPER_") and name != "GOALKEEPER_CONFIG"
    ]
    assert secrets, "every case gives the daemon at least one secret"
    for secret in secrets:
        assert secret
        assert secret not in result.stdout + result.stderr


def test_static_inventory_lands_where_the_config_looks(chart: Chart, tmp_path: Path) -> None:
    objects = render(chart, CASES["static-inventory"])
    inventory = objects[f"ConfigMap/{RELEASE}"]["data"].pop("inventory.yaml")
    assert check_config(objects, tmp_path / "without").returncode == 2
    objects[f"ConfigMap/{RELEASE}"]["data"]["inventory.yaml"] = inventory
    assert check_config(objects, tmp_path / "with").returncode == 0


def test_privileged_profile_adds_net_raw_and_the_capped_nmap(chart: Chart) -> None:
    objects = render(chart, {})
    context = container(objects)["securityContext"]
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["NET_RAW"]}
    # nmap's file capability needs execve to grant privileges, which no_new_privs forbids.
    assert context["allowPrivilegeEscalation"] is True
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    path = pod_environment(objects)["PATH"].split(":")
    assert path[:2] == ["/usr/lib/goalkeeper/nmap-privileged", "/opt/goalkeeper/bin"]
    scan = rendered_config(objects)["scan"]
    assert scan["privileged"] is True
    # nmap checks for root, not capabilities: without --privileged it would not try raw sockets.
    assert "--privileged" in scan["nmap_arguments"].split()


def test_restricted_profile_meets_pod_security_restricted(chart: Chart) -> None:
    # "Restricted" controls of the Pod Security Standards, one by one.
    objects = render(chart, CASES["postgres"])
    pod, main = pod_spec(objects), container(objects)
    context, pod_context = main["securityContext"], pod["securityContext"]
    assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC"))
    assert context.get("privileged") is not True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["runAsNonRoot"] is True
    assert pod_context["runAsNonRoot"] is True
    assert pod_context["runAsUser"] != 0
    assert context["seccompProfile"] == pod_context["seccompProfile"] == {"type": "RuntimeDefault"}
    allowed = {"configMap", "emptyDir", "persistentVolumeClaim", "secret", "projected"}
    assert all(set(volume) - {"name"} <= allowed for volume in pod["volumes"])
    assert all("hostPort" not in port for port in main["ports"])
    # Beyond the standard: nothing written outside the volumes, and no raw sockets asked for.
    assert context["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert "emptyDir" in volumes[mounts["/var/lib/goalkeeper"]]  # PostgreSQL: no claim
    assert "PATH" not in pod_environment(objects)  # Debian's nmap, without file capabilities
    scan = rendered_config(objects)["scan"]
    assert scan["privileged"] is False
    assert "--privileged" not in scan["nmap_arguments"].split()


@pytest.mark.parametrize("shutdown_timeout", [25, 90.5, 3600])
def test_grace_period_outlasts_the_daemons_shutdown(chart: Chart, shutdown_timeout: float) -> None:
    objects = render(chart, {"config": {"daemon": {"shutdown_timeout": shutdown_timeout}}})
    grace = pod_spec(objects)["terminationGracePeriodSeconds"]
    assert isinstance(grace, int)
    assert grace >= math.ceil(shutdown_timeout) + 5


def test_chart_refuses_to_render_without_the_clouds_ranges(chart: Chart) -> None:
    # Only rendering shows it: Helm's lint logs a template's `fail` and reports no error.
    with pytest.raises(HelmError, match="allowed_networks is empty"):
        render(chart, {"config": {"scan": {"allowed_networks": []}}})


def test_deployment_is_one_pod_recreated_with_probes_and_no_token(chart: Chart) -> None:
    objects = render(chart, {})
    deployment = objects[f"Deployment/{RELEASE}"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    main, pod = container(objects), pod_spec(objects)
    assert main["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert main["resources"]["requests"]
    assert main["resources"]["limits"]["memory"]
    assert pod["automountServiceAccountToken"] is False
    assert objects[f"ServiceAccount/{RELEASE}"]["automountServiceAccountToken"] is False
    # A Service named goalkeeper would otherwise inject GOALKEEPER_PORT & co, which the config
    # loader reads as (unknown) settings.
    assert pod["enableServiceLinks"] is False


def test_config_is_a_directory_mount_whose_change_rolls_the_pod(chart: Chart) -> None:
    objects = render(chart, {})
    mount = next(m for m in container(objects)["volumeMounts"] if m["name"] == "config")
    assert "subPath" not in mount
    assert Path(pod_environment(objects)["GOALKEEPER_CONFIG"]).parent == Path(mount["mountPath"])
    volume = next(v for v in pod_spec(objects)["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == RELEASE

    def checksum(values: dict[str, Any]) -> str | None:
        template = render(chart, values)[f"Deployment/{RELEASE}"]["spec"]["template"]
        annotation: str | None = template["metadata"]["annotations"].get("checksum/config")
        return annotation

    before = checksum({})
    assert before is not None
    assert checksum({"config": {"scan": {"exclude": ["203.0.113.7"]}}}) not in (before, None)
    assert checksum({"rollOnConfigChange": False}) is None


def test_secrets_come_from_the_operators_secret_or_from_values(chart: Chart) -> None:
    made = render(chart, {"secrets": {"values": {"smtpPassword": "pw-1"}}})
    secret = made[f"Secret/{RELEASE}-secrets"]
    assert secret["data"] == {"smtp-password": base64.b64encode(b"pw-1").decode()}
    assert pod_environment(made)["GOALKEEPER_NOTIFY__EMAIL__PASSWORD"] == "pw-1"
    assert "pw-1" not in yaml.safe_dump(made[f"ConfigMap/{RELEASE}"])

    theirs = render(chart, {"secrets": {"existingSecret": "goalkeeper-secrets"}})
    assert not [key for key in theirs if key.startswith("Secret/")]
    refs = {
        item["valueFrom"]["secretKeyRef"]["name"]
        for item in container(theirs)["env"]
        if "valueFrom" in item
    }
    assert refs == {"goalkeeper-secrets"}
    with pytest.raises(HelmError, match="not both"):
        render(chart, {"secrets": {"existingSecret": "x", "values": {"adminToken": "t"}}})


FLEIO_ON = {"config": {"inventory": {"fleio": {"url": "https://billing.example.test/staffapi"}}}}


def optional_refs(objects: dict[str, dict[str, Any]]) -> dict[str, bool]:
    return {
        item["valueFrom"]["secretKeyRef"]["key"]: item["valueFrom"]["secretKeyRef"]["optional"]
        for item in container(objects)["env"]
        if "valueFrom" in item
    }


@pytest.mark.parametrize(
    ("values", "needed"),
    [
        ({}, set()),  # nothing configured that needs a secret
        (FLEIO_ON, {"fleio-token"}),
        (merged(FLEIO_ON, {"config": {"inventory": {"fleio": {"enabled": False}}}}), set()),
        ({"config": {"inventory": {"fleio": {"enabled": True}}}}, {"fleio-token"}),
        (merged(FLEIO_ON, {"config": {"inventory": {"source": "static"}}}), set()),
        ({"config": {"notify": {"email": {"username": "gk"}}}}, {"smtp-password"}),
        (
            {"config": {"notify": {"telegram": {"enabled": True, "chat_id": "-100"}}}},
            {"telegram-token"},
        ),
        ({"persistence": {"enabled": False}}, {"state-url"}),
    ],
)
def test_secrets_the_config_needs_are_not_optional(
    chart: Chart, values: dict[str, Any], needed: set[str]
) -> None:
    theirs = merged({"secrets": {"existingSecret": "goalkeeper-secrets"}}, values)
    refs = optional_refs(render(chart, theirs))
    assert set(refs) == {
        "fleio-token",
        "smtp-password",
        "telegram-token",
        "admin-token",
        "state-url",
    }
    assert {key for key, optional in refs.items() if not optional} == needed


def test_a_needed_secret_the_chart_would_leave_out_is_refused(chart: Chart) -> None:
    with pytest.raises(
        HelmError, match=r"secrets.values.fleioToken is empty, but config.inventory"
    ):
        render(chart, FLEIO_ON)
    made = render(chart, merged(FLEIO_ON, {"secrets": {"values": {"fleioToken": "tok-9"}}}))
    assert optional_refs(made)["fleio-token"] is False
    assert pod_environment(made)["GOALKEEPER_INVENTORY__FLEIO__TOKEN"] == "tok-9"


def test_clouds_yaml_is_mounted_from_a_secret(chart: Chart) -> None:
    objects = render(chart, {"openstack": {"existingSecret": "openstack-prod"}})
    volume = next(v for v in pod_spec(objects)["volumes"] if v["name"] == "openstack")
    assert volume["secret"]["secretName"] == "openstack-prod"
    mount = next(m for m in container(objects)["volumeMounts"] if m["name"] == "openstack")
    clouds = pod_environment(objects)["OS_CLIENT_CONFIG_FILE"]
    assert Path(clouds).parent == Path(mount["mountPath"])
    assert mount["readOnly"] is True


def test_state_is_a_kept_claim_for_sqlite_and_none_for_postgresql(chart: Chart) -> None:
    sqlite = render(chart, {})
    claim = sqlite[f"PersistentVolumeClaim/{RELEASE}-state"]
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    volume = next(v for v in pod_spec(sqlite)["volumes"] if v["name"] == "state")
    assert volume["persistentVolumeClaim"]["claimName"] == f"{RELEASE}-state"
    url = rendered_config(sqlite)["state"]["url"]
    assert url.startswith("sqlite+aiosqlite:////var/lib/goalkeeper/")

    postgres = render(chart, CASES["postgres"])
    assert not [key for key in postgres if key.startswith("PersistentVolumeClaim/")]
    assert pod_environment(postgres)["GOALKEEPER_STATE__URL"].startswith("postgresql+asyncpg://")
    with pytest.raises(HelmError, match="would be lost"):
        render(chart, {"persistence": {"enabled": False}})


def test_service_monitor_scrapes_the_service(chart: Chart) -> None:
    objects = render(chart, {"metrics": {"serviceMonitor": {"enabled": True}}})
    monitor, service = objects[f"ServiceMonitor/{RELEASE}"], objects[f"Service/{RELEASE}"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert selector.items() <= pod_spec_labels(objects).items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= {
        port["name"] for port in container(objects)["ports"]
    }
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_network_policy_lets_in_only_monitoring_and_the_named_admin_clients(chart: Chart) -> None:
    assert not any(key.startswith("NetworkPolicy/") for key in render(chart, {}))
    staff = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "sec-ops"}}}
    objects = render(chart, {"networkPolicy": {"enabled": True, "adminClients": [staff]}})
    policy = objects[f"NetworkPolicy/{RELEASE}"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_spec_labels(objects).items()
    assert policy["policyTypes"] == ["Ingress"]  # egress: the scanner reaches every customer
    (rule,) = policy["ingress"]
    assert rule["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {},
        },
        staff,
    ]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert "http" in {port["name"] for port in container(objects)["ports"]}
    prod = render(chart, values_file("values-prod.yaml"))
    assert f"NetworkPolicy/{RELEASE}" in prod


def test_the_image_names_its_registry_and_may_be_pinned_by_digest(chart: Chart) -> None:
    assert container(render(chart, {}))["image"].startswith("registry.example.net/")
    digest = "sha256:" + "ab" * 32
    pinned = container(render(chart, {"image": {"digest": digest, "tag": "9.9"}}))
    assert pinned["image"] == f"registry.example.net/security/goalkeeper@{digest}"
    for bad in ({"repository": "goalkeeper"}, {"repository": "security/goalkeeper"}):
        with pytest.raises(HelmError, match="/image/repository"):
            render(chart, {"image": bad})
    with pytest.raises(HelmError, match="/image/digest"):
        render(chart, {"image": {"digest": "latest"}})


def pod_spec_labels(objects: dict[str, dict[str, Any]]) -> dict[str, str]:
    labels: dict[str, str] = objects[f"Deployment/{RELEASE}"]["spec"]["template"]["metadata"][
        "labels"
    ]
    return labels


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus)")
def test_alert_rules_pass_promtool_and_its_unit_tests(chart: Chart, tmp_path: Path) -> None:
    objects = render(chart, {"metrics": {"prometheusRule": {"enabled": True}}})
    groups = objects[f"PrometheusRule/{RELEASE}"]["spec"]["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"]}
    assert alerts == {
        "GoalkeeperNoSuccessfulTick",
        "GoalkeeperNotificationsFailing",
        "GoalkeeperNotificationsPending",
        "GoalkeeperStateStoreDown",
        "GoalkeeperHostsNotScanned",
        "GoalkeeperMailHeldBack",
        "GoalkeeperOwnerLookupIncident",
        "GoalkeeperDown",
    }
    (tmp_path / "full.yaml").write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    check = subprocess.run(
        ["promtool", "check", "rules", str(tmp_path / "full.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # The unit tests compare labels, not the prose of the annotations.
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    shutil.copy(CHART / "ci" / "alerts-test.yaml", tmp_path / "alerts-test.yaml")
    test = subprocess.run(
        ["promtool", "test", "rules", str(tmp_path / "alerts-test.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert test.returncode == 0, test.stdout + test.stderr


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ({"scan": {"allowed_network": ["203.0.113.0/24"]}}, "additional properties"),
        ({"environment": "production"}, "/config/environment"),
        ({"scan": {"allowed_networks": ["203.0.113.0/33"]}}, "/config/scan/allowed_networks/0"),
        ({"scan": {"exclude": ["2001:db8::/129"]}}, "/config/scan/exclude/0"),
        ({"scan": {"egress_addresses": ["203.0.113.0/24"]}}, "/config/scan/egress_addresses/0"),
        ({"notify": {"email": {"password": "pw-in-configmap"}}}, "/config/notify/email/password"),
        ({"http": {"admin_token": "tok"}}, "/config/http/admin_token"),
        ({"state": {"url": "postgresql+asyncpg://gk:pw@db/gk"}}, "/config/state/url"),
        ({"scan": {"ports": [{"port": 6379, "protocl": "tcp", "service": "redis"}]}}, "protocl"),
    ],
)
def test_values_schema_refuses_what_the_daemon_would(
    chart: Chart, config: dict[str, Any], where: str
) -> None:
    # Helm itself applies values.schema.json, on render and on lint alike.
    values = {"config": config}
    with pytest.raises(HelmError, match="don't meet the specifications of the schema") as err:
        render(chart, values)
    assert where in str(err.value)
    result = lint(CHART, merged(SCOPE, values), strict=True, namespace=NAMESPACE)
    assert any(where in error for error in result["errors"]), result["errors"]


def test_values_schema_takes_both_families_and_every_shipped_values_file(chart: Chart) -> None:
    both = {"scan": {"allowed_networks": ["2001:db8::/32", "198.51.100.0/24"]}}
    assert rendered_config(render(chart, {"config": both}))["scan"]["allowed_networks"] == [
        "2001:db8::/32",
        "198.51.100.0/24",
    ]
    # values.yaml alone is refused by the template (no ranges), after the schema passed it.
    render(chart, merged(values_file("values.yaml"), SCOPE))
    for name in CI_VALUES:
        assert render(chart, values_file(name))
    assert render(chart, values_file("values-prod.yaml"))
    assert render(chart, values_file("values-stage.yaml") | STAGE_COMMAND_LINE)  # its --set
