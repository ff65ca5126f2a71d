"""What a PROD image must do to be a drop-in for the official ``apache/airflow`` image: the checks
``verify_prod`` runs in every PROD image it builds, as data (pure: the operator runs them).

Each check is one ``docker run`` through the image's own entrypoint, as a user (or the official chart)
runs it: the default user, an arbitrary uid of group 0 (OpenShift), a group other than 0, and no
command at all. A check's script prints ``key=value`` lines; every expected key is compared, so a
failure names the contract point that broke (``umask: 0022, expected 0002``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from airflow_image_factory.policy.settings import extras_of

ARBITRARY_USER = "12345:0"
OTHER_GROUP_USER = "12345:12345"
NO_DB_WAIT = {"CONNECTION_CHECK_MAX_COUNT": "0"}  # where waiting for the database is not the point

Expectation = str | Callable[[str], bool]

# The default user: versions, environment, umask, no node, a sane venv, the database migrated by the
# entrypoint before a *bash* command (_AIRFLOW_DB_MIGRATE), and the chart's log groomer.
_DEFAULT_USER_SCRIPT = r"""
echo "airflow_version=$(airflow version 2>/dev/null | tail -n 1)"
echo "python_version=$(python --version 2>&1)"
echo "bash_version=$(bash --version | head -n 1)"
echo "opt_airflow_airflow=$(find /opt/airflow/airflow/ 2>/dev/null | wc -l)"
echo "AIRFLOW_VERSION=${AIRFLOW_VERSION:-}"
echo "load_examples=$(airflow config get-value core load_examples 2>/dev/null)"
echo "uid=$(id -u)"
echo "gid=$(id -g)"
echo "umask=$(umask)"
echo "node=$(command -v node npm pnpm npx | head -n 1)"
echo "pip_check=$(python -m pip check 2>&1 | tr '\n' ' ' | sed 's/ *$//')"
migrated=no
airflow db check-migrations --migration-wait-timeout 0 >/dev/null 2>&1 && migrated=yes
echo "migrated=${migrated}"
logs="${AIRFLOW_HOME}/logs"
mkdir -p "${logs}/dag_id=contract/run_id=old"
touch -d '20 days ago' "${logs}/dag_id=contract/run_id=old/1.log"
touch "${logs}/fresh.log"
CLEAN_LOGS_ONCE=true bash /clean-logs >/dev/null 2>&1
groomed=failed
[ ! -e "${logs}/dag_id=contract" ] && [ -e "${logs}/fresh.log" ] && groomed=ok
echo "clean_logs=${groomed}"
"""

# An arbitrary uid of group 0: it gets a name and a home, and may pip-install into the venv.
_ARBITRARY_USER_SCRIPT = r"""
echo "whoami=$(whoami 2>&1)"
echo "HOME=${HOME}"
echo "umask=$(umask)"
site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
venv=no
touch "${site}/.contract-probe" 2>/dev/null && rm -f "${site}/.contract-probe" && venv=yes
echo "venv_writable=${venv}"
logs=no
mkdir -p "${AIRFLOW_HOME}/logs/contract" 2>/dev/null && logs=yes
echo "logs_writable=${logs}"
"""


# The providers ``airflow providers list`` shows are exactly the expected ones. EXPECTED_PROVIDERS (a
# comma list of distribution names) is Airflow's own list where the sources have one; empty: what the
# image's extras (IMAGE_AIRFLOW_EXTRAS) and apache-airflow-core require, read from the installed
# metadata with each requirement's markers, and the providers those providers require in turn.
_PROVIDERS_SCRIPT = r"""
import json, os, subprocess
from importlib import metadata
from packaging.requirements import Requirement

PREFIX = "apache-airflow-providers-"

def norm(name):
    return name.lower().replace("_", "-").replace(".", "-")

def required(dist, extras):
    found = set()
    try:
        requirements = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:  # an expected provider that is not installed: reported below
        return found
    for raw in requirements:
        req = Requirement(raw)
        if norm(req.name).startswith(PREFIX) and (
            req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras)
        ):
            found.add(norm(req.name))
    return found

listed = [p for p in os.environ.get("EXPECTED_PROVIDERS", "").split(",") if p]
if listed:
    expected = {norm(p) for p in listed}
else:
    extras = [""] + [e.strip() for e in os.environ.get("IMAGE_AIRFLOW_EXTRAS", "").split(",") if e.strip()]
    expected = required("apache-airflow-core", [""]) | required("apache-airflow", extras)
    todo = set(expected)
    while todo:
        more = required(todo.pop(), [""]) - expected
        expected |= more
        todo |= more
out = subprocess.run(["airflow", "providers", "list", "--output", "json"], capture_output=True, text=True,
                     env={**os.environ, "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR"})
try:
    installed = {norm(p["package_name"]) for p in json.loads(out.stdout)}
except ValueError:
    print("providers=airflow providers list gave no JSON: " + (out.stderr or out.stdout)[-300:].replace("\n", " "))
    raise SystemExit(0)
missing, extra = sorted(expected - installed), sorted(installed - expected)
print("provider_count=%d" % len(installed))
print("providers=" + ("ok" if expected and not missing and not extra
                      else "missing %s; not expected %s" % (missing or "none", extra or "none")))
"""

# Modules that must import in an image with each extra (what Airflow's own PROD image tests import).
EXTRA_IMPORTS: dict[str, tuple[str, ...]] = {
    "amazon": ("boto3", "botocore", "watchtower"),
    "async": ("gevent", "eventlet", "greenlet"),
    "celery": ("celery", "flower", "vine"),
    "cncf-kubernetes": ("kubernetes", "cryptography"),
    "docker": ("docker",),
    "elasticsearch": ("elasticsearch",),
    "google": (
        "OpenSSL", "googleapiclient", "google.auth", "google_auth_httplib2", "google.cloud.automl",
        "google.cloud.bigquery_datatransfer", "google.cloud.bigtable", "google.cloud.container",
        "google.cloud.datacatalog", "google.cloud.dataproc", "google.cloud.dlp", "google.cloud.kms",
        "google.cloud.language", "google.cloud.logging", "google.cloud.memcache", "google.cloud.monitoring",
        "google.cloud.oslogin", "google.cloud.pubsub", "google.cloud.redis", "google.cloud.secretmanager",
        "google.cloud.spanner", "google.cloud.speech", "google.cloud.storage", "google.cloud.tasks",
        "google.cloud.texttospeech", "google.cloud.translate", "google.cloud.videointelligence",
        "google.cloud.vision",
    ),
    "grpc": ("grpc", "google.auth", "google_auth_httplib2"),
    "hashicorp": ("hvac",),
    "ldap": ("ldap",),
    "microsoft-azure": (
        "azure.batch", "azure.cosmos", "azure.datalake.store", "azure.identity", "azure.keyvault.secrets",
        "azure.kusto.data", "azure.mgmt.containerinstance", "azure.mgmt.datalake.store", "azure.mgmt.resource",
        "azure.storage",
    ),
    "mysql": ("MySQLdb",),
    "odbc": ("pyodbc",),
    "postgres": ("psycopg2",),
    "redis": ("redis",),
    "sendgrid": ("sendgrid",),
    "sftp": ("paramiko", "sshtunnel"),
    "ssh": ("paramiko", "sshtunnel"),
    "slack": ("slack_sdk",),
    "statsd": ("statsd",),
}

# Each extra's modules, every installed provider's package, and every executor Airflow knows by name
# whose provider is installed (the chart's default is CeleryExecutor: a provider package that imports
# while its executor does not — celery 5.7 under providers-celery 3.26 — crash-loops the scheduler)
# import, one line per group. The executors come from Airflow's own table (ExecutorLoader.executors).
_IMPORTS_SCRIPT = r"""
import importlib, json, os, sys
from importlib import metadata

groups = json.loads(os.environ["IMPORT_GROUPS"])
# A provider's entry point is <its package>.get_provider_info:get_provider_info.
groups["providers"] = sorted(
    ep.value.split(":")[0].rsplit(".", 1)[0] for ep in metadata.entry_points(group="apache_airflow_provider")
)
from airflow.executors.executor_loader import ExecutorLoader

installed = {(d.metadata["Name"] or "").lower().replace("_", "-") for d in metadata.distributions()}
executors = {}
for alias, path in sorted(ExecutorLoader.executors.items()):
    parts = path.split(".")
    if parts[1] == "providers":  # airflow.providers.<id...>.executors.<module>.<class>
        provider = "apache-airflow-providers-" + "-".join(parts[2:parts.index("executors")])
        if provider not in installed:
            continue
    executors[alias] = path
groups["executors"] = sorted(path.rsplit(".", 1)[0] for path in executors.values())
for group, modules in sorted(groups.items()):
    broken = []
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            broken.append("%s (%s: %s)" % (module, type(exc).__name__, str(exc)[:160]))
    print("imports_%s=%s" % (group, "ok" if not broken else "failed: " + ", ".join(broken)))
print("import_groups=" + ",".join(sorted(groups)))
print("executors=" + ",".join(sorted(executors)))
"""

# The executors an image with these extras must be able to load (LocalExecutor: always).
EXTRA_EXECUTORS: dict[str, str] = {"celery": "CeleryExecutor", "cncf-kubernetes": "KubernetesExecutor"}

# As root, with a module on a custom PYTHONPATH (the docs' "run custom packages as root").
_ROOT_SCRIPT = r"""
mkdir -p /tmp/custom-mount && printf 'print("Awesome")\n' >/tmp/custom-mount/awesome.py
info=failed
airflow info >/dev/null 2>&1 && info=ok
echo "airflow_info=${info}"
echo "custom_import=$(PYTHONPATH=/tmp/custom-mount python -c 'import awesome' 2>&1)"
"""


def expected_imports(extras: str) -> dict[str, list[str]]:
    """The modules each of the image's extras must make importable (extras without a list: none)."""
    return {extra: list(EXTRA_IMPORTS[extra]) for extra in extras_of(extras) if extra in EXTRA_IMPORTS}


def expected_executors(extras: str) -> set[str]:
    """The executors an image with ``extras`` loads by name: LocalExecutor, and each extra's own."""
    return {"LocalExecutor", *(EXTRA_EXECUTORS[e] for e in extras_of(extras) if e in EXTRA_EXECUTORS)}


@dataclass(frozen=True)
class ImageCheck:
    name: str
    command: tuple[str, ...] | None  # None: the image's own CMD
    user: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    exit_code: int = 0
    values: Mapping[str, Expectation] = field(default_factory=dict)  # key → expected value (or a test)
    contains: tuple[str, ...] = ()  # text the output must hold
    lacks: tuple[str, ...] = ()  # text the output must not hold

    def failures(self, exit_code: int, output: str) -> list[str]:
        """What this check found wrong in one run's exit code and output; empty: passed."""
        problems = []
        if exit_code != self.exit_code:
            problems.append(f"exit code {exit_code}, expected {self.exit_code}")
        found = dict(
            line.split("=", 1) for line in output.splitlines() if "=" in line and not line.startswith(" ")
        )
        for key, expected in self.values.items():
            value = found.get(key)
            if value is None:
                problems.append(f"{key}: not reported")
            elif callable(expected):
                if not expected(value):
                    problems.append(f"{key}: {value!r} is not what the official image gives")
            elif value != expected:
                problems.append(f"{key}: {value!r}, expected {expected!r}")
        problems += [f"output lacks {text!r}" for text in self.contains if text not in output]
        problems += [f"output holds {text!r}" for text in self.lacks if text in output]
        return problems


def prod_checks(
    expected_version: str, *, airflow_uid: str = "50000", extras: str = "", expected_providers: tuple[str, ...] = (),
) -> list[ImageCheck]:
    """The official image's contract, for an image built as Airflow ``expected_version`` with ``extras``.

    ``expected_providers``: the provider distributions the image must hold, exactly (Airflow's own list
    for the variant, where the sources have one); empty: the ones its extras and airflow-core require.
    """
    version: Expectation = expected_version or (lambda value: bool(value))
    import_groups = expected_imports(extras)
    return [
        ImageCheck(
            name="default user",
            command=("bash", "-c", _DEFAULT_USER_SCRIPT),
            environment={"_AIRFLOW_DB_MIGRATE": "true"},
            values={
                "airflow_version": version,
                "AIRFLOW_VERSION": version,
                "python_version": lambda value: value.startswith("Python 3."),
                "bash_version": lambda value: value.startswith("GNU bash,"),
                "opt_airflow_airflow": "0",  # no sources folder left in the image
                "load_examples": lambda value: value.lower() == "false",  # the env var, as written
                "uid": airflow_uid,
                "gid": "0",
                "umask": "0002",
                "node": "",
                "pip_check": "No broken requirements found.",
                "migrated": "yes",
                "clean_logs": "ok",
            },
        ),
        ImageCheck(
            name="providers",
            command=("python", "-c", _PROVIDERS_SCRIPT),
            environment={**NO_DB_WAIT, "EXPECTED_PROVIDERS": ",".join(expected_providers)},
            values={"providers": "ok"},
        ),
        ImageCheck(
            name="imports",
            command=("python", "-c", _IMPORTS_SCRIPT),
            environment={**NO_DB_WAIT, "IMPORT_GROUPS": json.dumps(import_groups)},
            values={"import_groups": ",".join(sorted([*import_groups, "executors", "providers"])),
                    "executors": lambda found: expected_executors(extras) <= set(found.split(",")),
                    **{f"imports_{group}": "ok" for group in [*import_groups, "executors", "providers"]}},
        ),
        ImageCheck(
            name="as root",
            command=("bash", "-c", _ROOT_SCRIPT),
            user="0",
            environment={**NO_DB_WAIT, "PYTHONDONTWRITEBYTECODE": "true"},
            values={"airflow_info": "ok", "custom_import": "Awesome"},
        ),
        ImageCheck(
            name="arbitrary uid",
            command=("bash", "-c", _ARBITRARY_USER_SCRIPT),
            user=ARBITRARY_USER,
            environment=NO_DB_WAIT,
            values={"whoami": "default", "HOME": "/home/airflow", "umask": "0002", "venv_writable": "yes",
                    "logs_writable": "yes"},
        ),
        ImageCheck(
            name="group other than 0",
            command=("bash", "-c", "echo the command ran"),
            user=OTHER_GROUP_USER,
            environment=NO_DB_WAIT,
            exit_code=1,
            contains=("GID=0",),
            lacks=("the command ran",),
        ),
        ImageCheck(
            name="no command",
            command=None,
            environment=NO_DB_WAIT,
            exit_code=2,  # `airflow` alone: its usage, as an error
            contains=("the following arguments are required: GROUP_OR_COMMAND",),
        ),
        ImageCheck(
            name="airflow alone",
            command=("airflow",),
            environment=NO_DB_WAIT,
            exit_code=2,
            contains=("the following arguments are required: GROUP_OR_COMMAND",),
        ),
    ]


def providers_in_pyproject(text: str) -> tuple[str, ...]:
    """The provider distributions a ``pyproject.toml``'s ``[project] dependencies`` name (airflow-core's:
    what the slim image holds, as Airflow's own tests read it)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    found = []
    for requirement in tomllib.loads(text).get("project", {}).get("dependencies", []):
        name = re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")
        if name.startswith("apache-airflow-providers-"):
            found.append(name)
    return tuple(sorted(set(found)))


def providers_in_list_file(text: str, *, python: str) -> tuple[str, ...]:
    """Airflow's ``prod_image_installed_providers.txt`` (provider ids, ``#`` comments) as distribution
    names; fab is left out on Python 3.13, as Airflow's tests do."""
    found = {
        "apache-airflow-providers-" + line.split(">=")[0].strip().replace(".", "-")
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    }
    if python == "3.13":
        found.discard("apache-airflow-providers-fab")
    return tuple(sorted(found))
