"""include/stack/seed_stack.py, the Python half of `make stack`: its decisions and the env file, with small
fakes (no engine, registry or Airflow); `make stack` itself runs the rest for real."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_image_factory.clients.engine import BuildKitProbe
from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.clients.signing import EvidenceSigner

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "include" / "stack"))
import seed_stack

SETTINGS = load_settings(env={})
PROBE = BuildKitProbe(cli="/usr/bin/docker", runs_buildkit=True, buildx=False, output="")


def config(tmp_path: Path, **env: str) -> seed_stack.StackConfig:
    return seed_stack.StackConfig.from_env({"STACK_DIR": str(tmp_path / "stack"), **env}, SETTINGS)


# --- settings -------------------------------------------------------------------------------------


def test_the_defaults_are_up_shs(tmp_path):
    cfg = config(tmp_path, REGISTRY_PORT="5001")
    assert cfg.mirror == "localhost:5001/library/python" and cfg.registry == "localhost:5001"
    assert (cfg.mirror_host, cfg.mirror_path) == ("localhost:5001", "library/python")
    assert cfg.python_versions == ("3.11", "3.13") and cfg.pull_timeout == 20
    assert cfg.upstream == SETTINGS.python_base_upstream == "docker.io/library/python"
    assert cfg.source_repo == tmp_path / "stack" / "source.git" and cfg.docker_cli == ""
    assert cfg.arm64_python_versions == ("3.11",)
    assert config(tmp_path, ARM64_PYTHON_VERSIONS="").arm64_python_versions == ()  # set and empty: no arm64


def test_a_python_the_package_does_not_support_is_refused_with_the_known_ones(tmp_path):
    with pytest.raises(seed_stack.StackError) as refused:
        seed_stack.check_config(config(tmp_path, PYTHON_VERSIONS="3.11 3.9"), SETTINGS)
    assert str(refused.value) == "Python 3.9 is not supported (known: 3.10 3.11 3.12 3.13); fix PYTHON_VERSIONS"
    with pytest.raises(seed_stack.StackError, match="names no repository"):
        seed_stack.check_config(config(tmp_path, MIRROR="localhost:5001"), SETTINGS)
    with pytest.raises(seed_stack.StackError, match="PULL_TIMEOUT='soon' is not a number"):
        config(tmp_path, PULL_TIMEOUT="soon")


def test_each_base_is_of_the_debian_the_packages_settings_name(tmp_path):
    bases = seed_stack.bases_of(config(tmp_path, PYTHON_VERSIONS="3.11 3.13 3.12"), SETTINGS)
    assert [b.image for b in bases] == [
        "localhost:5000/library/python:3.11-slim-bookworm",
        "localhost:5000/library/python:3.13-slim-trixie",
        "localhost:5000/library/python:3.12-slim-bookworm",
    ]
    assert bases[1].upstream_ref == "docker.io/library/python:3.13-slim-trixie"


# --- the bases ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("in_mirror", "tarball", "upstream", "how"), [
    (True, True, True, "present"),  # the mirror has it: nothing else matters
    (False, True, True, "import"),  # up.sh built it for this run, because the pull failed
    (False, False, True, "tag"),
    (False, False, False, None),
])
def test_where_a_base_comes_from(in_mirror, tarball, upstream, how):
    assert seed_stack.where_from(in_mirror=in_mirror, tarball=tarball, upstream_on_engine=upstream) == how


def test_only_a_debian_shipping_that_python_can_build_it_offline(tmp_path):
    bookworm_311, trixie_313, bookworm_312 = seed_stack.bases_of(config(tmp_path, PYTHON_VERSIONS="3.11 3.13 3.12"),
                                                                 SETTINGS)
    assert seed_stack.offline_build_refusal(bookworm_311, "docker.io/library/python", SETTINGS) is None
    assert seed_stack.offline_build_refusal(trixie_313, "docker.io/library/python", SETTINGS) is None
    assert seed_stack.offline_build_refusal(bookworm_312, "docker.io/library/python", SETTINGS) == (
        "python:3.12-slim-bookworm cannot be built offline: Debian bookworm ships Python 3.11, not 3.12 (offline "
        "builds exist for: 3.11 3.13). Make docker.io/library/python reachable, or drop 3.12 from PYTHON_VERSIONS.")


def test_the_imported_rootfs_looks_like_the_official_image(tmp_path):
    base = seed_stack.bases_of(config(tmp_path), SETTINGS)[0]
    changes = seed_stack.import_changes("3.11.2", base)
    assert "ENV PYTHON_VERSION=3.11.2" in changes and 'CMD ["python3"]' in changes
    assert "LABEL org.opencontainers.image.version=3.11.2" in changes
    assert any("Offline stand-in for python:3.11-slim-bookworm" in change for change in changes)


# --- the probe's answer, from `bases` to `seed` -----------------------------------------------------


def test_the_probe_is_handed_over_once(tmp_path):
    path = tmp_path / "run" / "buildkit-cli.json"
    seed_stack.save_probe(path, PROBE)
    assert seed_stack.load_probe(path) == PROBE
    assert not path.exists() and seed_stack.load_probe(path) is None  # a later run probes again
    seed_stack.save_probe(path, BuildKitProbe("/x/docker", runs_buildkit=False, buildx=False, output="no"))
    assert seed_stack.load_probe(path) is None  # never trusted: seed probes itself
    path.write_text("{not json")
    assert seed_stack.load_probe(path) is None


def test_a_forced_cli_that_fails_the_probe_is_refused_with_its_output(monkeypatch):
    failed = BuildKitProbe("/opt/docker", runs_buildkit=False, buildx=False, output="ERROR: buildx is missing")
    monkeypatch.setattr(seed_stack, "probe_buildkit", lambda cli: failed)
    with pytest.raises(seed_stack.StackError, match=r"DOCKER_CLI=/opt/docker cannot run a BuildKit build") as refused:
        seed_stack.choose_cli("/opt/docker")
    assert refused.value.output == "ERROR: buildx is missing"


def test_without_a_forced_cli_the_packages_choice_is_taken(monkeypatch):
    monkeypatch.setattr(seed_stack, "find_buildkit_cli", lambda: "/usr/bin/docker")
    monkeypatch.setattr(seed_stack, "probe_buildkit", lambda cli: PROBE if cli == "/usr/bin/docker" else None)
    assert seed_stack.choose_cli("") is PROBE


# --- the Airflow home -------------------------------------------------------------------------------


def test_the_migration_stamp_is_the_installed_airflow_or_the_binary(tmp_path):
    venv = tmp_path / "venv"
    airflow = venv / "bin" / "airflow"
    airflow.parent.mkdir(parents=True)
    airflow.write_text("")
    os.utime(airflow, (1_700_000_000, 1_700_000_000))
    assert seed_stack.migration_stamp(airflow) == f"{airflow} 1700000000"
    (venv / "lib" / "python3.11" / "site-packages" / "apache_airflow-3.3.2.dist-info").mkdir(parents=True)
    assert seed_stack.migration_stamp(airflow) == "apache_airflow-3.3.2.dist-info"


def test_a_database_migrated_for_this_airflow_is_kept(tmp_path):
    stamp = "apache_airflow-3.3.2.dist-info"
    assert seed_stack.needs_migration(tmp_path, stamp)
    (tmp_path / "airflow.db").write_text("")
    (tmp_path / ".stack-migrated").write_text(stamp + "\n")  # as up.sh's echo wrote it
    assert not seed_stack.needs_migration(tmp_path, stamp)
    assert seed_stack.needs_migration(tmp_path, "apache_airflow-3.4.0.dist-info")


# --- the env file -------------------------------------------------------------------------------------


def test_the_env_file_is_as_up_sh_wrote_it(tmp_path):
    cfg = config(tmp_path, REGISTRY_PORT="5001", EXTRA_CA_BUNDLE="/ca.crt")
    text = seed_stack.env_file_text(cfg.stack_dir, seed_stack.env_values(cfg, PROBE))
    stack, repo = cfg.stack_dir, seed_stack.REPO_ROOT
    assert text == f"""\
# Written by include/stack/up.sh; source it: . {stack}/env
export STACK_DIR='{stack}'
export AIRFLOW_HOME='{stack}/airflow'
export AIRFLOW__CORE__DAGS_FOLDER='{repo}/dags'
export AIRFLOW__CORE__PLUGINS_FOLDER='{repo}/plugins'
export AIRFLOW__CORE__LOAD_EXAMPLES='False'
export IMAGE_FACTORY_DOCKER_CLI='/usr/bin/docker'
export IMAGE_FACTORY_BUILDX='false'
export IMAGE_FACTORY_REGISTRY='localhost:5001'
export IMAGE_FACTORY_PYTHON_BASE_MIRROR='localhost:5001/library/python'
export IMAGE_FACTORY_SOURCE_REPO='{stack}/source.git'
export IMAGE_FACTORY_EXTRA_CA_BUNDLE='/ca.crt'
export IMAGE_FACTORY_PYTHON_VERSIONS='["3.11","3.13"]'
export IMAGE_FACTORY_RELEASE_DEFAULT_PYTHON='3.11'
export IMAGE_FACTORY_RELEASE_CONSTRAINTS_URL=''
export IMAGE_FACTORY_STACK_PLATFORMS='linux/amd64'
"""
    with_host = seed_stack.env_values(config(tmp_path, DOCKER_HOST="unix:///run/other.sock"), PROBE)
    assert list(with_host)[5] == "DOCKER_HOST" and with_host["DOCKER_HOST"] == "unix:///run/other.sock"


def test_the_stacks_signing_key_is_made_once_kept_private_and_given_as_the_connection(tmp_path):
    cfg = config(tmp_path)
    cfg.stack_dir.mkdir(parents=True)
    key = seed_stack.ensure_signing_key(cfg.stack_dir)
    first = key.read_text()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and "PRIVATE KEY" in first
    assert seed_stack.ensure_signing_key(cfg.stack_dir).read_text() == first  # kept across `make stack` runs
    seed_stack.write_env_file(cfg, PROBE)
    env_file = cfg.stack_dir / "env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    sourced = subprocess.run(["bash", "-c", f"source {shlex.quote(str(env_file))} && env -0"],
                             capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]}).stdout
    env = dict(line.split("=", 1) for line in sourced.split("\0") if "=" in line)
    connection = json.loads(env["AIRFLOW_CONN_IMAGE_FACTORY_SIGNING"])
    assert connection == {"conn_type": "generic", "password": first}
    public = (cfg.stack_dir / "evidence-signing.pub.pem").read_text()
    assert EvidenceSigner.from_pem(first).public_pem == public


def test_sourcing_the_env_file_gives_the_package_the_stacks_settings(tmp_path):
    cfg = config(tmp_path, PYTHON_VERSIONS="3.13 3.11", EXTRA_CA_BUNDLE="/etc/it's here.crt")
    cfg.stack_dir.mkdir(parents=True)
    seed_stack.write_env_file(cfg, BuildKitProbe("/opt/my docker", runs_buildkit=True, buildx=True, output=""))
    sourced = subprocess.run(["bash", "-c", f"source {shlex.quote(str(cfg.stack_dir / 'env'))} && env -0"],
                             capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]}).stdout
    env = dict(item.split("=", 1) for item in sourced.split("\0") if "=" in item)
    settings = load_settings(env=env)
    assert settings.docker_cli == "/opt/my docker" and settings.buildx is True
    assert settings.extra_ca_bundle == "/etc/it's here.crt"
    assert settings.python_versions == ("3.13", "3.11") and settings.release_default_python == "3.13"
    assert settings.python_base_mirror == "localhost:5000/library/python" and settings.release_constraints_url == ""
    assert not (cfg.stack_dir / "env.tmp").exists()


def test_only_the_packages_settings_become_image_factory_variables():
    assert seed_stack.setting_env("python_versions", ("3.11",)) == ("IMAGE_FACTORY_PYTHON_VERSIONS", '["3.11"]')
    with pytest.raises(KeyError, match="not a setting"):
        seed_stack.setting_env("python_version", "3.11")


# --- logs -----------------------------------------------------------------------------------------


def test_a_step_prints_into_its_log_and_a_failure_names_it(tmp_path, capfd):
    log = tmp_path / "logs" / "step.log"
    with seed_stack.output_to(log):
        print("from python")
        subprocess.run(["echo", "from a child"], check=True)
    assert log.read_text() == "from python\nfrom a child\n"
    with pytest.raises(seed_stack.StackError) as failed, seed_stack.output_to(log):
        raise SystemExit("seed_constraints: no branch main")
    assert failed.value.log == log and "no branch main" in log.read_text()
    print("on screen again")
    assert capfd.readouterr().out == "on screen again\n"


def test_a_failure_shows_the_end_of_its_log_then_the_error(tmp_path, capsys):
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {n}\n" for n in range(30)))
    seed_stack.fail(seed_stack.StackError("airflow db migrate failed", log=log))
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"[stack] --- last lines of {log} ---" and err[1] == "line 10"
    assert err[-1] == "[stack] ERROR: airflow db migrate failed"


def test_check_runs_without_an_engine(tmp_path):
    env = {**os.environ, "STACK_DIR": str(tmp_path), "PYTHON_VERSIONS": "3.8"}
    result = subprocess.run([sys.executable, str(Path(seed_stack.__file__)), "check"], capture_output=True,
                            text=True, env=env, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().endswith("[stack] ERROR: Python 3.8 is not supported (known: 3.10 3.11 3.12 3.13); "
                                          "fix PYTHON_VERSIONS")
    assert json.loads(json.dumps(result.stdout)) == ""


# --- the bases into the mirror, with a fake engine and registry ------------------------------------


class FakeMirror:
    def __init__(self, listed=(), lists_pushes=True):
        self.listed, self.lists_pushes = set(listed), lists_pushes

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def manifest_digest(self, repository, reference):
        return "sha256:" + "0" * 64 if (repository, reference) in self.listed else None


class FakeEngine:
    def __init__(self, mirror, *, local=(), sane=True):
        self.mirror, self.local, self.sane = mirror, set(local), sane
        self.done: list[tuple] = []

    def has_image(self, ref):
        return ref in self.local

    def import_tarball(self, tarball, ref, *, changes):
        self.done.append(("import", tarball.name, ref, changes))
        self.local.add(ref)

    def tag(self, image, ref):
        self.done.append(("tag", image, ref))
        self.local.add(ref)

    def run(self, image, command, **kwargs):
        from airflow_image_factory.clients.engine import RunResult

        assert kwargs["network"] == "none"  # a base must work with nothing but itself
        self.done.append(("run", image))
        return RunResult(0 if self.sane else 1, "Python 3.11.2")

    def push(self, ref, **kwargs):
        self.done.append(("push", ref))
        if self.mirror.lists_pushes:
            self.mirror.listed.add(tuple(ref.split("/", 1)[1].split(":")))
        return "sha256:" + "1" * 64


def test_a_debootstrapped_base_is_imported_a_pulled_one_tagged_then_each_checked_and_pushed(tmp_path, monkeypatch,
                                                                                            capsys):
    cfg = config(tmp_path)
    cfg.rootfs.mkdir(parents=True)
    cfg.logs.mkdir(parents=True)
    (cfg.rootfs / "3.11-slim-bookworm.tar").write_bytes(b"rootfs")
    (cfg.rootfs / "3.11-slim-bookworm.python-version").write_text("3.11.2\n")
    mirror = FakeMirror()
    monkeypatch.setattr(seed_stack, "mirror_client", lambda config: mirror)
    engine = FakeEngine(mirror, local={"docker.io/library/python:3.13-slim-trixie"})
    seed_stack.seed_bases(cfg, SETTINGS, engine)
    mirrored = "localhost:5000/library/python"
    assert [step[:3] if step[0] == "import" else step for step in engine.done] == [
        ("import", "3.11-slim-bookworm.tar", f"{mirrored}:3.11-slim-bookworm"),
        ("run", f"{mirrored}:3.11-slim-bookworm"), ("push", f"{mirrored}:3.11-slim-bookworm"),
        ("tag", "docker.io/library/python:3.13-slim-trixie", f"{mirrored}:3.13-slim-trixie"),
        ("run", f"{mirrored}:3.13-slim-trixie"), ("push", f"{mirrored}:3.13-slim-trixie"),
    ]
    assert "ENV PYTHON_VERSION=3.11.2" in engine.done[0][3]
    assert list(cfg.rootfs.iterdir()) == []  # in the mirror now: the tarball is not needed again
    assert f"[stack]   pushed {mirrored}:3.13-slim-trixie" in capsys.readouterr().out

    engine.done.clear()
    seed_stack.seed_bases(cfg, SETTINGS, engine)  # a second run: both present
    assert engine.done == []


def test_a_base_that_fails_its_check_or_is_not_listed_after_the_push_stops_the_stack(tmp_path, monkeypatch):
    cfg = config(tmp_path, PYTHON_VERSIONS="3.13")
    cfg.logs.mkdir(parents=True)
    pulled = {"docker.io/library/python:3.13-slim-trixie"}
    mirror = FakeMirror()
    monkeypatch.setattr(seed_stack, "mirror_client", lambda config: mirror)
    insane = FakeEngine(mirror, local=pulled, sane=False)
    with pytest.raises(seed_stack.StackError, match=r"3.13-slim-trixie does not pass the sanity check"):
        seed_stack.seed_bases(cfg, SETTINGS, insane)
    assert not [step for step in insane.done if step[0] == "push"]

    mirror.lists_pushes = False
    with pytest.raises(seed_stack.StackError, match=r"3.13-slim-trixie was pushed but localhost:5000 does not list it"):
        seed_stack.seed_bases(cfg, SETTINGS, FakeEngine(mirror, local=pulled))
    with pytest.raises(seed_stack.StackError, match=r"was neither pulled nor built offline; run include/stack/up.sh"):
        seed_stack.seed_bases(cfg, SETTINGS, FakeEngine(mirror))
