"""deploy/: systemd unit, container image and compose file, Postfix snippets, Kubernetes.

This machine runs no systemd as PID 1, no container engine and no cluster, so what is
tested is what can be: systemd-analyze verify/security and systemd-sysusers on the real
unit files, postconf on the real snippets, promtool on the Prometheus configs, every
spamgate config loaded and every filter in it built, and the files' cross-references
(ports, paths, addresses) checked against each other.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from spamgate.filters.sdk.api import Filter
from spamgate.proxy.config import Config, load_config, parse_config
from spamgate.proxy.pipeline import discover, filter_env

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CONTAINER = DEPLOY / "container"


def run(*cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=120, cwd=cwd)


def unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """systemd's INI dialect: sections of (key, value), keys may repeat."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"not key=value: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def builds_every_filter(cfg: Config) -> None:
    eps = discover()
    for name, table in cfg.enabled_filters.items():
        flt = eps[name].load()(name, table.options, filter_env(cfg))
        assert isinstance(flt, Filter), name
        asyncio.run(flt.close())


# -- systemd --------------------------------------------------------------------------

SERVICE = DEPLOY / "systemd" / "spamgate.service"


def test_unit_hardening() -> None:
    svc = dict(unit(SERVICE)["Service"])
    assert svc["User"] == "spamgate"
    assert svc["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert svc["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    for key, value in {"ProtectSystem": "strict", "NoNewPrivileges": "yes", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "PrivateDevices": "yes", "RestrictSUIDSGID": "yes",
                       "StateDirectory": "spamgate"}.items():  # fmt: skip
        assert svc[key] == value, key
    reload = [v for k, v in unit(SERVICE)["Service"] if k == "ExecReload"]
    assert reload[-1] == "/bin/kill -HUP $MAINPID"
    assert svc["ExecStart"].endswith("run --config /etc/spamgate/spamgate.toml")
    # stop timeout covers the default graceful shutdown
    assert float(svc["TimeoutStopSec"].rstrip("s")) > parse_config({}).server.shutdown_grace


def _runnable_unit(tmp_path: Path, text: str) -> Path:
    """The unit with its binary pointing at this environment's spamgate (verify checks it exists)."""
    spamgate = Path(sys.executable).parent / "spamgate"
    assert spamgate.exists()
    path = tmp_path / "spamgate.service"
    path.write_text(text.replace("/opt/spamgate/bin/spamgate", str(spamgate)))
    return path


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    assert shutil.which("systemd-analyze"), "apt-get install systemd (provides systemd-analyze)"
    res = run("systemd-analyze", "verify", str(_runnable_unit(tmp_path, SERVICE.read_text())))
    assert res.returncode == 0 and res.stdout + res.stderr == "", res.stdout + res.stderr


def test_systemd_analyze_verify_catches_a_typo(tmp_path: Path) -> None:
    bad = SERVICE.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict")
    res = run("systemd-analyze", "verify", str(_runnable_unit(tmp_path, bad)))
    assert "Unknown key" in res.stderr


def test_systemd_exposure_is_low(tmp_path: Path) -> None:
    path = _runnable_unit(tmp_path, SERVICE.read_text())
    res = run("systemd-analyze", "security", "--offline=yes", "--threshold=20", str(path))
    assert res.returncode == 0, res.stdout[-2000:]
    level = re.search(r"Overall exposure level for spamgate.service: ([0-9.]+)", res.stdout)
    assert level and float(level.group(1)) <= 2.0


def test_sysusers_creates_the_service_user(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    res = run("systemd-sysusers", f"--root={tmp_path}", str(DEPLOY / "systemd" / "spamgate.sysusers"))
    assert res.returncode == 0, res.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text()
    assert re.search(r"^spamgate:x:\d+:\d+:[^:]*:/var/lib/spamgate:/usr/sbin/nologin$", passwd, re.M)


# -- container and compose ------------------------------------------------------------


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CONTAINER / "compose.yaml").read_text())
    return data


def test_container_config_is_valid_and_its_filters_build() -> None:
    cfg = load_config(CONTAINER / "spamgate.toml")
    assert cfg.backend.host == "postfix" and cfg.backend.port == 10025
    assert cfg.metrics.host == "0.0.0.0"
    builds_every_filter(cfg)
    res = run(sys.executable, "-m", "spamgate.proxy", "check-config", str(CONTAINER / "spamgate.toml"), cwd=ROOT)
    assert res.returncode == 0, res.stderr


def test_containerfile_matches_config_and_repo() -> None:
    text = (CONTAINER / "Containerfile").read_text()
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in src.split():
            assert (ROOT / path).exists(), path
    cfg = load_config(CONTAINER / "spamgate.toml")
    exposed = {int(p) for p in re.search(r"^EXPOSE (.+)$", text, re.M).group(1).split()}  # type: ignore[union-attr]
    assert exposed == {cfg.listen[0].port, cfg.metrics.port}
    assert re.search(r"^USER spamgate$", text, re.M)
    assert '"run", "--config", "/etc/spamgate/spamgate.toml"' in text


def test_compose_wires_the_six_services() -> None:
    c = compose()
    services = c["services"]
    assert set(services) == {"postfix", "spamd", "clamd", "redis", "spamgate", "prometheus", "grafana"}
    assert load_config(CONTAINER / "spamgate.toml").state.url == "redis://redis:6379/0"
    cfg = load_config(CONTAINER / "spamgate.toml")
    assert cfg.filters["antivirus"].options["host"] == "clamd"
    assert "clamd" in services["spamgate"]["depends_on"]
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            src = volume.split(":")[0]
            if src.startswith("."):
                assert (CONTAINER / src).exists(), f"{name}: {src}"
        build = svc.get("build")
        if build is not None:
            ctx = CONTAINER / (build if isinstance(build, str) else build["context"])
            dockerfile = "Containerfile" if isinstance(build, str) else build["dockerfile"]
            assert (ctx / dockerfile).is_file(), name
    cfg = load_config(CONTAINER / "spamgate.toml")
    assert services["spamgate"]["ports"] == [f"25:{cfg.listen[0].port}"]


def test_compose_addresses_match_postfix_and_spamd() -> None:
    c = compose()
    spamgate_ip = c["services"]["spamgate"]["networks"]["mail"]["ipv4_address"]
    site = (CONTAINER / "postfix" / "main.cf.site").read_text()
    assert f"smtpd_authorized_xclient_hosts = {spamgate_ip}" in site
    subnet = c["networks"]["mail"]["ipam"]["config"][0]["subnet"]
    assert f"--allowed-ips={subnet}" in (CONTAINER / "spamd" / "Containerfile").read_text()
    assert "10025 inet" in (CONTAINER / "postfix" / "Containerfile").read_text()


def test_compose_grafana_gets_the_dashboard_where_provisioning_looks() -> None:
    volumes = compose()["services"]["grafana"]["volumes"]
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/spamgate.yml").read_text())["providers"][0]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in volumes}
    assert mounts[provider["options"]["path"]] == "../../grafana/dashboards"
    assert (CONTAINER / "../../grafana/dashboards/spamgate.json").is_file()
    assert "/etc/grafana/provisioning/datasources" in mounts


def test_compose_prometheus_config_is_valid(tmp_path: Path) -> None:
    shutil.copy(CONTAINER / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    res = run("promtool", "check", "config", str(tmp_path / "prometheus.yml"))
    assert res.returncode == 0, res.stdout + res.stderr
    cfg = load_config(CONTAINER / "spamgate.toml")
    targets = yaml.safe_load((CONTAINER / "prometheus.yml").read_text())["scrape_configs"][0]["static_configs"]
    assert targets[0]["targets"] == [f"spamgate:{cfg.metrics.port}"]


# -- Postfix --------------------------------------------------------------------------


def postfix_dir(tmp_path: Path, main_extra: str, master_extra: str = "") -> Path:
    """Debian's stock Postfix config with our additions, port 25's smtpd removed."""
    shutil.copy("/usr/share/postfix/main.cf.debian", tmp_path / "main.cf")
    master = Path("/etc/postfix/master.cf.proto").read_text()
    master = re.sub(r"^smtp(\s+inet\s)", r"#smtp\1", master, flags=re.M)
    (tmp_path / "master.cf").write_text(master + master_extra)
    with (tmp_path / "main.cf").open("a") as f:
        f.write(main_extra)
    return tmp_path


def postconf(conf: Path, *args: str) -> str:
    res = run("postconf", "-c", str(conf), *args)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    return res.stdout


def test_postfix_snippets_parse_without_warnings(tmp_path: Path) -> None:
    conf = postfix_dir(
        tmp_path, (DEPLOY / "postfix/main.cf.snippet").read_text(), (DEPLOY / "postfix/master.cf.snippet").read_text()
    )
    assert postconf(conf, "-h", "smtpd_authorized_xclient_hosts").strip() == "127.0.0.1"
    assert int(postconf(conf, "-h", "message_size_limit")) >= parse_config({}).limits.max_message_size
    services = postconf(conf, "-M")
    assert re.search(r"^127\.0\.0\.1:10025\s+inet\b.*\bsmtpd\b", services, re.M)
    assert not re.search(r"^smtp\s+inet\b", services, re.M), "port 25 must be left to spamgate"
    params = postconf(conf, "-P")
    assert "127.0.0.1:10025/inet/smtpd_authorized_xclient_hosts = 127.0.0.1" in params
    postconf(conf, "-n")  # every main.cf parameter is known (unknown ones warn on stderr)
    backend = parse_config({}).backend
    assert (backend.host, backend.port) == ("127.0.0.1", 10025), "spamgate's defaults match the snippet"


def test_postconf_check_would_catch_a_typo(tmp_path: Path) -> None:
    conf = postfix_dir(tmp_path, "smtpd_authorised_xclient_hosts = 127.0.0.1\n")
    res = run("postconf", "-c", str(conf), "-n")
    assert "unused parameter: smtpd_authorised_xclient_hosts" in res.stderr


def test_container_postfix_site_config_parses(tmp_path: Path) -> None:
    conf = postfix_dir(tmp_path, (CONTAINER / "postfix" / "main.cf.site").read_text())
    assert postconf(conf, "-h", "smtpd_authorized_xclient_hosts").strip() == "172.30.25.10"
    postconf(conf, "-n")


# -- Kubernetes -----------------------------------------------------------------------


def k8s() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            out[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return out


def k8s_config(tmp_path: Path) -> Config:
    path = tmp_path / "spamgate.toml"
    path.write_text(k8s()["ConfigMap/spamgate"]["data"]["spamgate.toml"])
    return load_config(path)


def test_k8s_manifests(tmp_path: Path) -> None:
    docs = k8s()
    assert {"ConfigMap/spamgate", "Deployment/spamgate", "Service/spamgate", "Service/spamgate-metrics",
            "Deployment/spamgate-redis", "Service/spamgate-redis"} <= set(docs)
    assert docs["Deployment/spamgate"]["spec"]["replicas"] >= 2
    assert k8s_config(tmp_path).state.url == "redis://spamgate-redis:6379/0"
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    for res in kustomization["resources"]:
        assert (DEPLOY / "k8s" / res).is_file(), res
    pod = docs["Deployment/spamgate"]["spec"]["template"]["spec"]
    container, clamd = pod["containers"]
    assert container["name"] == "spamgate" and clamd["name"] == "clamd"
    clamd_port = next(p["containerPort"] for p in clamd["ports"])
    assert clamd_port == k8s_config(tmp_path).filters["antivirus"].options["port"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    cfg = k8s_config(tmp_path)
    assert ports == {"smtp": cfg.listen[0].port, "metrics": cfg.metrics.port}
    assert cfg.metrics.host == "0.0.0.0" and cfg.listen[0].host == "0.0.0.0"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")["mountPath"]
    assert container["args"] == ["run", "--config", f"{mount}/spamgate.toml"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["terminationGracePeriodSeconds"] > cfg.server.shutdown_grace
    smtp = docs["Service/spamgate"]["spec"]
    assert smtp["externalTrafficPolicy"] == "Local"
    assert smtp["ports"][0]["port"] == 25 and smtp["ports"][0]["targetPort"] == "smtp"


def test_k8s_config_filters_build(tmp_path: Path) -> None:
    builds_every_filter(k8s_config(tmp_path))


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in DEPLOY.rglob("*.y*ml")))
def test_every_yaml_file_parses(path: str) -> None:
    assert list(yaml.safe_load_all((ROOT / path).read_text()))


# -- quarantine digest (systemd timer + service, cron) ----------------------------------

DIGEST_SERVICE = DEPLOY / "systemd" / "spamgate-digest.service"
DIGEST_TIMER = DEPLOY / "systemd" / "spamgate-digest.timer"


def test_digest_timer_and_service_verify(tmp_path: Path) -> None:
    spamgate = Path(sys.executable).parent / "spamgate"
    svc = tmp_path / DIGEST_SERVICE.name
    svc.write_text(DIGEST_SERVICE.read_text().replace("/opt/spamgate/bin/spamgate", str(spamgate)))
    timer = tmp_path / DIGEST_TIMER.name
    timer.write_text(DIGEST_TIMER.read_text())
    res = run("systemd-analyze", "verify", str(svc), str(timer))
    assert res.returncode == 0 and res.stdout + res.stderr == "", res.stdout + res.stderr
    assert dict(unit(DIGEST_TIMER)["Timer"])["Unit"] == DIGEST_SERVICE.name
    assert dict(unit(DIGEST_SERVICE)["Service"])["ExecStart"].endswith("digest --config /etc/spamgate/spamgate.toml")


def test_digest_cron_line_runs_the_same_command() -> None:
    lines = [ln for ln in (DEPLOY / "cron" / "spamgate-digest").read_text().splitlines()
             if ln and not ln.startswith("#") and "=" not in ln.split()[0]]
    assert len(lines) == 1
    fields = lines[0].split(None, 6)
    assert len(fields) == 7 and fields[5] == "spamgate"
    assert fields[6] == "/opt/spamgate/bin/spamgate digest --config /etc/spamgate/spamgate.toml"
