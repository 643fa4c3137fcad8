"""docker-compose.yml, .env.example and the Dockerfile, checked against the code (Docker cannot run here).

- Commands and modules: every `python -m services.X[.Y]` (command or healthcheck) resolves to a runnable
  module of this tree; `alembic upgrade head` has alembic.ini, migrations/env.py and exactly one head;
  the `creditsctl` entrypoint is the console script pyproject.toml declares, and it runs.
- Environment: interpolated with .env.example as compose would, each service's own start-up settings
  (`from_env`, tracing, the ledger's probe) accept its environment, and read every variable compose sets
  (an environment that records lookups; alembic's env.py by its source; OTEL_* are the SDK's). Every
  variable a service cannot start without is given for sure: a literal or ${VAR:?...}, never `:-`.
- Callers: each service's LEDGER_TOKEN is one caller of the ledger's LEDGER_CALLERS, with the roles it needs.
- Ports: published / exposed container ports are the ports the settings listen on; LEDGER_TARGET names the
  ledger service and its listen port; the Dockerfile EXPOSEs them all.
- Healthchecks: the module, URL, port and path each uses exist (the gateway's /readyz is a route of the
  real application); pg_isready and redis-cli match their images.
- depends_on: valid conditions; `service_healthy` targets have a healthcheck, `service_completed_successfully`
  targets are one-shot; no cycle; the start order PostgreSQL -> migrate -> ledger -> gateway / reconciler.
- Profiles: the model `docker compose [--profile P] up` starts, as compose builds it (a service runs when it has no
  profile or one of the active ones; a `required: false` dependency on a service left out is dropped, a required
  one makes compose refuse the project). Without a profile, the deployment is the one it always was.
- Profile citus (docs/citus-deploy.md): a coordinator and two workers of the pinned official citusdata/citus image,
  each with its own volume, healthy only once the image's init scripts ran; a one-shot citus-init running
  deploy/citus/join.sql with exactly the variables that file reads; migrate waits for it; with
  LEDGER_DATABASE_HOST=citus-coordinator, migrate and the ledger reach the coordinator with the nodes' user,
  password and database. Every variable the nodes set is one the image (or libpq) reads.
- Secrets: tokens, keys, passwords only through ${VAR} (no literal, no non-empty default); .env.example lists
  exactly the variables compose references, with obvious placeholders.
- Dockerfile: COPY sources exist and survive .dockerignore; CMD names a runnable module; an unprivileged USER;
  no secret in ENV/ARG; .env, .venv and var/ stay out of the build context.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.util
import json
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from alembic.config import Config
from alembic.script import ScriptDirectory

from services.common.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_PATH = ROOT / "docker-compose.yml"
ENV_EXAMPLE_PATH = ROOT / ".env.example"
DOCKERFILE_PATH = ROOT / "Dockerfile"
DOCKERIGNORE_PATH = ROOT / ".dockerignore"

APP_SERVICES = ("migrate", "ledger", "gateway", "reconciler", "creditsctl")
IMAGE_SERVICES = {"postgres": "postgres:16", "redis": "redis:7"}
# Variables the official images read (hub.docker.com/_/postgres); nothing of ours reads them.
IMAGE_VARIABLES = {"postgres": {"POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD"}, "redis": set()}
# Profile citus: Citus 13 (the suite's major version) for PostgreSQL 15 or 16, pinned to a release. Its tags are
# <citus version>-pg<postgres major> (citusdata/docker's postgres-NN/Dockerfile, published as such).
CITUS_PROFILE = "citus"
CITUS_IMAGE = "citusdata/citus:13.2.0-pg16"
CITUS_IMAGE_PATTERN = re.compile(r"citusdata/citus:13\.\d+\.\d+-pg1[56]")
CITUS_COORDINATOR = "citus-coordinator"
CITUS_WORKERS = ("citus-worker1", "citus-worker2")
CITUS_NODES = (CITUS_COORDINATOR, *CITUS_WORKERS)
CITUS_INIT = "citus-init"
CITUS_SERVICES = (*CITUS_NODES, CITUS_INIT)
# The postgres image's variables, and PGPASSWORD: libpq's, read by the Citus node's own connections to the other
# nodes (the citusdata/citus entrypoint keeps it in the server's environment) and by psql in citus-init.
CITUS_NODE_VARIABLES = IMAGE_VARIABLES["postgres"] | {"PGPASSWORD"}
CITUS_INIT_VARIABLES = {"PGPASSWORD"}
POSTGRES_PORT = 5432  # the images' own (nothing here changes it)
DATA_DIRECTORY = "/var/lib/postgresql/data"  # the postgres image's PGDATA
PSQL_VARIABLE = re.compile(r":'?([a-z_]+)'?")
# Read by the OpenTelemetry SDK itself (SPEC §6: "the standard OTEL_* variables").
STANDARD_PREFIXES = ("OTEL_",)
# The gateway needs exactly one of these: from_env itself refuses none or several, so each is optional alone.
ONE_OF_VARIABLES = {"JWT_SECRET", "JWT_PUBLIC_KEY", "JWT_JWKS_URL"}
ROLES_NEEDED = {
    "gateway": {"payments", "reader", "admin"},
    "reconciler": {"reconciler"},
    "creditsctl": {"admin", "reader", "reconciler"},
}
DEPENDS_ON_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY|PRIVATE|CALLERS")
SECRET_VALUE = re.compile(
    r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{8,}|\bwhsec_[0-9A-Za-z]{8,}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY|\beyJ[0-9A-Za-z_-]{10,}\."
)
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]{2,}$")
# Compose interpolation: $$, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $VAR.
INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
PYTHON_MODULE_COMMAND = re.compile(r"python -m ([A-Za-z_][\w.]*)")


# --- reading the files ---------------------------------------------------------------------------


@functools.cache
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_PATH.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    return services[name]


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines as compose reads a .env file (comments, blank lines, optional quotes)."""
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, value = stripped.partition("=")
        assert sep and ENV_NAME.match(name), f".env.example line {number}: expected NAME=value"
        assert name not in values, f".env.example: {name} listed twice"
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


@functools.cache
def env_example() -> dict[str, str]:
    return parse_env_file(ENV_EXAMPLE_PATH.read_text(encoding="utf-8"))


def references(text: str) -> Iterator[tuple[str, str, str]]:
    """(name, operator, argument) of every interpolation in `text`."""
    for match in INTERPOLATION.finditer(text):
        if match.group("escaped"):
            continue
        name = match.group("name") or match.group("bare")
        yield name, match.group("op") or "", match.group("arg") or ""


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's interpolation; a missing ${VAR:?...} raises, as compose refuses to start."""

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("name") or match.group("bare")
        operator, argument = match.group("op") or "", match.group("arg") or ""
        value = variables.get(name)
        unset = value is None or (operator.startswith(":") and value == "")
        if operator.endswith("?") and unset:
            raise LookupError(f"{name}: {argument}")
        if operator.endswith("-") and unset:
            return argument
        return value or ""

    return INTERPOLATION.sub(replace, text)


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def raw_environment(name: str) -> dict[str, str]:
    environment = service(name).get("environment", {})
    assert isinstance(environment, dict), f"{name}: write environment as a mapping"
    return {key: str(value) for key, value in environment.items()}


def environment(name: str, variables: Mapping[str, str] | None = None) -> dict[str, str]:
    """The service's environment after interpolation with .env.example (or `variables`)."""
    values = env_example() if variables is None else variables
    return {key: interpolate(value, values) for key, value in raw_environment(name).items()}


def command_words(name: str) -> list[str]:
    definition = service(name)
    words: list[str] = []
    for key in ("entrypoint", "command"):
        value = definition.get(key)
        if value is not None:
            words += value if isinstance(value, list) else shlex.split(value)
    return words


def healthcheck_words(name: str) -> list[str]:
    test = service(name).get("healthcheck", {}).get("test")
    if test is None:
        return []
    if isinstance(test, str):
        return shlex.split(test)
    assert test[0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck test starts with CMD or CMD-SHELL"
    return shlex.split(test[1]) if test[0] == "CMD-SHELL" else list(test[1:])


def python_modules(words: list[str]) -> list[str]:
    return PYTHON_MODULE_COMMAND.findall(" ".join(words))


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


# --- what the code reads -------------------------------------------------------------------------


class RecordingEnvironment(dict[str, str]):
    """An environment that remembers every name the code looked up (present or not)."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: Any, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return super().__contains__(key)


def module_path(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def names_in_source(path: Path) -> set[str]:
    """String constants shaped like environment variable names in one module (alembic's env.py reads os.environ)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and ENV_NAME.match(node.value)
    }


def variables_read(name: str) -> set[str]:
    """What the service reads from its environment when it starts (and its healthcheck, for the ledger)."""
    if command_words(name)[:3] == ["alembic", "upgrade", "head"]:
        return names_in_source(ROOT / "migrations" / "env.py")
    recording = RecordingEnvironment(environment(name))
    build_settings(name, recording)
    if "services.ledger.probe" in python_modules(healthcheck_words(name)):
        from services.ledger import probe

        probe.default_target(recording)
        probe.channel_credentials(probe.build_parser().parse_args([]), recording)
    return recording.read


def is_read_by(name: str, variable: str) -> bool:
    return variable.startswith(STANDARD_PREFIXES) or variable in variables_read(name)


# --- the service's own settings ------------------------------------------------------------------


def build_settings(name: str, env: Mapping[str, str]) -> list[Any]:
    """Every settings object the service builds at start-up from `env`; ConfigError when it would not start."""
    from services.common import config
    from services.common.tracing import configure_tracing

    words = command_words(name)
    built: list[Any] = []
    if words[:3] == ["alembic", "upgrade", "head"]:
        return [config.database_url(env)]
    if words[0] == "creditsctl":
        from services.cli.settings import LedgerAccess, StripeAccess
        from services.reconciler.config import ReconcilerSettings

        return [LedgerAccess.from_env(env), StripeAccess.from_env(env), ReconcilerSettings.from_env(env)]
    for module in python_modules(words):
        settings_module = importlib.import_module(f"{module}.config")
        classes = [
            value
            for value in vars(settings_module).values()
            if isinstance(value, type) and value.__module__ == settings_module.__name__ and hasattr(value, "from_env")
        ]
        assert len(classes) == 1, f"{module}.config: expected one settings class with from_env, got {classes}"
        built.append(classes[0].from_env(env))
    provider = configure_tracing(name, env, set_global=False)
    if provider is not None:
        provider.shutdown()
    return built


def caller_roles(token: str) -> set[str]:
    from services.ledger.config import LedgerSettings

    ledger = LedgerSettings.from_env(environment("ledger"))
    digest = hashlib.sha256(token.encode()).digest()
    matches = [caller for caller in ledger.callers if caller.token_sha256 == digest]
    assert len(matches) == 1, "the token is not exactly one caller of LEDGER_CALLERS"
    return set(matches[0].roles)


# --- the compose file ----------------------------------------------------------------------------


def test_the_services_and_the_image() -> None:
    assert set(compose()["services"]) == {*APP_SERVICES, *IMAGE_SERVICES, *CITUS_SERVICES}
    for name, image in IMAGE_SERVICES.items():
        assert service(name)["image"] == image
    images = {service(name)["image"] for name in APP_SERVICES}
    assert len(images) == 1, f"one image for every part of the suite, got {images}"
    for name in APP_SERVICES:
        build = service(name)["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE_PATH
    assert "pgdata" in compose()["volumes"]
    assert any(volume.startswith("pgdata:") for volume in service("postgres")["volumes"])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("migrate", ["alembic", "upgrade", "head"]),
        ("ledger", ["python", "-m", "services.ledger"]),
        ("gateway", ["python", "-m", "services.webhook_gateway"]),
        ("reconciler", ["python", "-m", "services.reconciler"]),
    ],
)
def test_each_service_runs_its_public_command(name: str, expected: list[str]) -> None:
    assert command_words(name) == expected


def all_python_modules() -> list[tuple[str, str]]:
    found = []
    for name in compose()["services"]:
        for module in python_modules(command_words(name)) + python_modules(healthcheck_words(name)):
            found.append((name, module))
    return found


@pytest.mark.parametrize(("name", "module"), all_python_modules(), ids=str)
def test_python_modules_exist_and_are_runnable(name: str, module: str) -> None:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, f"{name}: python -m {module}: no such module"
    origin = Path(spec.origin)
    assert ROOT in origin.parents, f"{module} resolves outside the repository: {origin}"
    if spec.submodule_search_locations is not None:  # a package runs its __main__
        origin = origin.parent / "__main__.py"
        assert origin.is_file(), f"python -m {module}: the package has no __main__.py"
    tree = ast.parse(origin.read_text(encoding="utf-8"))
    guards = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) and "__main__" in ast.unparse(node.test)
    ]
    assert guards, f"{origin.relative_to(ROOT)}: no `if __name__ == '__main__':` block"


def test_alembic_upgrade_head_is_valid() -> None:
    config = Config(str(ROOT / "alembic.ini"))
    script = ScriptDirectory.from_config(config)
    assert Path(script.dir).resolve() == (ROOT / "migrations").resolve()
    assert (ROOT / "migrations" / "env.py").is_file()
    assert len(script.get_heads()) == 1, "`alembic upgrade head` needs exactly one head"
    assert service("migrate")["restart"] == "no"


def test_creditsctl_is_the_declared_console_script() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    module_name, _, function_name = scripts["creditsctl"].partition(":")
    assert callable(getattr(importlib.import_module(module_name), function_name))
    assert command_words("creditsctl")[0] == "creditsctl"
    assert service("creditsctl")["profiles"] == ["tools"], "the CLI runs on demand, not with `up`"
    completed = subprocess.run(
        [sys.executable, "-m", "services.cli", "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr
    assert "replay-event" in completed.stdout


def test_reconciler_runs_in_loop_mode_on_a_schedule() -> None:
    from services.reconciler.__main__ import build_parser

    arguments = build_parser().parse_args(command_words("reconciler")[3:])
    assert not arguments.once, "compose runs the reconciler's loop: a run now, then one per interval"
    settings = build_settings("reconciler", environment("reconciler"))[0]
    assert settings.interval_seconds == 86_400


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_variable_set_is_read_by_the_code(name: str) -> None:
    unread = sorted(variable for variable in raw_environment(name) if not is_read_by(name, variable))
    assert not unread, f"{name}: sets variables no code of it reads: {unread}"


def test_the_read_check_refuses_a_variable_nobody_reads() -> None:
    assert is_read_by("gateway", "STRIPE_WEBHOOK_SECRET")
    assert not is_read_by("gateway", "STRIPE_WEBHOOK_SECRETS")
    assert not is_read_by("reconciler", "LEDGER_CALLERS")
    assert not is_read_by("creditsctl", "STRIPE_WEBHOOK_SECRET"), "the CLI verifies no webhooks"
    assert is_read_by("migrate", "DATABASE_URL")


@pytest.mark.parametrize("name", IMAGE_SERVICES)
def test_image_services_set_only_their_image_variables(name: str) -> None:
    assert set(raw_environment(name)) <= IMAGE_VARIABLES[name]


@pytest.mark.parametrize("name", CITUS_SERVICES)
def test_citus_services_set_only_variables_their_image_reads(name: str) -> None:
    expected = CITUS_INIT_VARIABLES if name == CITUS_INIT else CITUS_NODE_VARIABLES
    assert set(raw_environment(name)) == expected


@pytest.mark.parametrize("name", APP_SERVICES)
def test_each_service_starts_with_its_environment(name: str) -> None:
    build_settings(name, environment(name))  # ConfigError (the service's start-up refusal) fails the test


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_required_variable_is_given_for_sure(name: str) -> None:
    """A variable the service cannot start without is literal or ${VAR:?...}: never silently empty."""
    full = environment(name)
    for variable, raw in raw_environment(name).items():
        if variable in ONE_OF_VARIABLES:
            continue
        try:
            build_settings(name, {key: value for key, value in full.items() if key != variable})
        except ConfigError as exc:
            assert variable in str(exc), f"{name}: removing {variable} failed for another reason: {exc}"
            optional = [ref for ref in references(raw) if may_be_empty(*ref)]
            assert not optional, f"{name}: {variable} is required but compose may leave it empty: {raw!r}"


def may_be_empty(name: str, operator: str, argument: str) -> bool:
    """Whether compose may put an empty string for this reference: only ${VAR:?...} and ${VAR:-non-empty} cannot."""
    del name
    return not (operator.endswith("?") or (operator == ":-" and argument != ""))


def test_the_emptiness_check_refuses_what_compose_may_leave_empty() -> None:
    assert not may_be_empty("HOST", ":-", "postgres")
    assert not may_be_empty("TOKEN", ":?", "set TOKEN")
    assert may_be_empty("HOST", "-", "postgres"), "${HOST-postgres} is empty when HOST is set empty"
    assert may_be_empty("HOST", ":-", "")
    assert may_be_empty("HOST", "", "")
    assert interpolate("${HOST-postgres}", {"HOST": ""}) == ""
    assert interpolate("${HOST:-postgres}", {"HOST": ""}) == "postgres"


def test_required_variables_really_are_refused_when_missing() -> None:
    env = environment("gateway")
    del env["LEDGER_TOKEN"]
    with pytest.raises(ConfigError, match="LEDGER_TOKEN"):
        build_settings("gateway", env)
    with pytest.raises(LookupError, match="STRIPE_API_KEY"):
        environment("gateway", {key: value for key, value in env_example().items() if key != "STRIPE_API_KEY"})


@pytest.mark.parametrize("name", sorted(ROLES_NEEDED))
def test_each_ledger_token_is_a_caller_with_the_roles_it_needs(name: str) -> None:
    roles = caller_roles(environment(name)["LEDGER_TOKEN"])
    assert ROLES_NEEDED[name] <= roles, f"{name}: its token has roles {sorted(roles)}"


def test_callers_have_one_token_each() -> None:
    from services.ledger.config import LedgerSettings

    callers = LedgerSettings.from_env(environment("ledger")).callers
    assert {caller.name for caller in callers} == {"gateway", "reconciler", "app", "operator"}
    raw = raw_environment("ledger")["LEDGER_CALLERS"]
    names = [name for name, _, _ in references(raw)]
    assert len(names) == len(set(names)) == len(callers), "every caller's token is its own variable"


# --- ports and healthchecks ----------------------------------------------------------------------


def container_ports(name: str) -> set[int]:
    ports = {int(str(item).rsplit(":", 1)[-1].split("/")[0]) for item in service(name).get("ports", [])}
    return ports | {int(item) for item in service(name).get("expose", [])}


def test_ports_are_the_ones_the_services_listen_on() -> None:
    ledger = build_settings("ledger", environment("ledger"))[0]
    gateway = build_settings("gateway", environment("gateway"))[0]
    reconciler = build_settings("reconciler", environment("reconciler"))[0]
    assert container_ports("ledger") == {port_of(ledger.listen_address), ledger.metrics_port}
    assert container_ports("gateway") == {port_of(gateway.listen_address)}
    assert container_ports("reconciler") == {reconciler.metrics_port}
    for name in ("gateway", "reconciler", "creditsctl"):
        host, _, port = environment(name)["LEDGER_TARGET"].rpartition(":")
        assert host == "ledger" and int(port) == port_of(ledger.listen_address), f"{name}: LEDGER_TARGET"
    assert environment("gateway")["REDIS_URL"].startswith("redis://redis:6379/")
    for name in ("migrate", "ledger"):
        assert urlsplit(environment(name)["DATABASE_URL"]).hostname == "postgres"
    exposed = {int(port) for port in dockerfile_instructions("EXPOSE")[0].split()}
    for name in APP_SERVICES:
        assert container_ports(name) <= exposed, f"{name}: a port the Dockerfile does not EXPOSE"


def python_snippet_urls(name: str) -> list[str]:
    words = healthcheck_words(name)
    if words[:2] != ["python", "-c"]:
        return []
    compile(words[2], f"{name} healthcheck", "exec")  # a syntax error would mark it unhealthy for ever
    return re.findall(r"http://[^'\"]+", words[2])


async def test_the_gateway_healthcheck_asks_its_readiness_route() -> None:
    from services.ledger.client import LedgerClient
    from services.stripe_bridge.api import StripeApi
    from services.webhook_gateway.app import build_app

    settings = build_settings("gateway", environment("gateway"))[0]
    (url,) = python_snippet_urls("gateway")
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1" and parts.port == port_of(settings.listen_address)
    ledger = LedgerClient(settings.ledger_target, settings.ledger_token)
    stripe_api = StripeApi(settings.stripe_api_key, settings.stripe_api_base)
    try:
        app = build_app(settings, ledger, stripe_api)
        routes = {(route.method, route.resource.canonical) for route in app.router.routes() if route.resource}
    finally:
        await stripe_api.close()
        await ledger.close()
    assert ("GET", parts.path) in routes
    assert parts.path == "/readyz"


def test_the_reconciler_healthcheck_asks_its_metrics_port() -> None:
    settings = build_settings("reconciler", environment("reconciler"))[0]
    (url,) = python_snippet_urls("reconciler")
    assert urlsplit(url).port == settings.metrics_port


def test_the_ledger_healthcheck_is_the_grpc_probe() -> None:
    assert healthcheck_words("ledger") == ["python", "-m", "services.ledger.probe"]
    from services.ledger.probe import default_target

    ledger = build_settings("ledger", environment("ledger"))[0]
    assert default_target(environment("ledger")) == f"127.0.0.1:{port_of(ledger.listen_address)}"


def test_image_healthchecks_fit_their_images() -> None:
    postgres = healthcheck_words("postgres")
    env = environment("postgres")
    assert postgres[0] == "pg_isready"
    assert postgres[postgres.index("-U") + 1] == env["POSTGRES_USER"]
    assert postgres[postgres.index("-d") + 1] == env["POSTGRES_DB"]
    assert healthcheck_words("redis") == ["redis-cli", "ping"]


# --- depends_on ----------------------------------------------------------------------------------


def dependencies(name: str) -> dict[str, str]:
    declared = service(name).get("depends_on", {})
    assert isinstance(declared, dict), f"{name}: depends_on with conditions, as a mapping"
    return {target: spec["condition"] for target, spec in declared.items()}


def test_depends_on_conditions_are_valid() -> None:
    for name in compose()["services"]:
        for target, condition in dependencies(name).items():
            assert target in compose()["services"], f"{name} depends on unknown {target}"
            assert condition in DEPENDS_ON_CONDITIONS, f"{name} -> {target}: {condition}"
            if condition == "service_healthy":
                assert "healthcheck" in service(target), f"{name} waits for {target} healthy: it has no healthcheck"
            if condition == "service_completed_successfully":
                assert service(target).get("restart") == "no", f"{target} is waited for to finish: make it one-shot"


def test_start_order() -> None:
    assert model_dependencies("migrate", set()) == {"postgres": "service_healthy"}
    assert dependencies("ledger") == {"migrate": "service_completed_successfully"}
    assert dependencies("gateway")["ledger"] == "service_healthy"
    assert dependencies("reconciler") == {"ledger": "service_healthy"}


def test_no_dependency_cycle() -> None:
    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"depends_on cycle: {' -> '.join((*path, name))}"
        for target in dependencies(name):
            visit(target, (*path, name))

    for name in compose()["services"]:
        visit(name, ())


# --- profiles ------------------------------------------------------------------------------------

PROFILE_SETS = [set(), {"tools"}, {CITUS_PROFILE}, {"tools", CITUS_PROFILE}]


def profiles_of(definition: Mapping[str, Any]) -> set[str]:
    return set(definition.get("profiles", []))


def model(profiles: set[str], services: Mapping[str, Any] | None = None) -> set[str]:
    """The services `docker compose --profile P... up` starts: those without profiles and those of an active one."""
    services = compose()["services"] if services is None else services
    return {name for name, spec in services.items() if not profiles_of(spec) or profiles_of(spec) & profiles}


def model_dependencies(name: str, profiles: set[str], services: Mapping[str, Any] | None = None) -> dict[str, str]:
    """`name`'s depends_on in that model: compose drops a `required: false` dependency on a service left out, and
    refuses the whole project over a required one."""
    services = compose()["services"] if services is None else services
    active = model(profiles, services)
    kept: dict[str, str] = {}
    for target, spec in services[name].get("depends_on", {}).items():
        if target in active:
            kept[target] = spec["condition"]
        else:
            assert spec.get("required", True) is False, (
                f"{name} requires {target}, which profiles {sorted(profiles)} leave out: compose refuses the project"
            )
    return kept


@pytest.mark.parametrize("profiles", PROFILE_SETS, ids=lambda profiles: "+".join(sorted(profiles)) or "none")
def test_every_profile_gives_a_valid_model(profiles: set[str]) -> None:
    for name in model(profiles):
        model_dependencies(name, profiles)


def test_the_model_check_refuses_a_required_dependency_left_out() -> None:
    services: dict[str, Any] = {
        "app": {"depends_on": {"db": {"condition": "service_started"}}},
        "db": {"profiles": ["extra"]},
    }
    assert model(set(), services) == {"app"}
    with pytest.raises(AssertionError, match="compose refuses the project"):
        model_dependencies("app", set(), services)
    assert model_dependencies("app", {"extra"}, services) == {"db": "service_started"}
    services["app"]["depends_on"]["db"]["required"] = False
    assert model_dependencies("app", set(), services) == {}


def test_without_a_profile_the_deployment_is_the_one_it_always_was() -> None:
    assert model(set()) == {"postgres", "migrate", "ledger", "gateway", "reconciler", "redis"}
    assert model({"tools"}) == model(set()) | {"creditsctl"}
    for name in model(set()):
        assert model_dependencies(name, set()) == {
            target: condition for target, condition in dependencies(name).items() if target not in CITUS_SERVICES
        }
    unset = {key: value for key, value in env_example().items() if key != "LEDGER_DATABASE_HOST"}
    for variables in (env_example(), unset):
        for name in ("migrate", "ledger"):
            url = urlsplit(environment(name, variables)["DATABASE_URL"])
            assert (url.hostname, url.port) == ("postgres", POSTGRES_PORT), f"{name}: {url.hostname}"


# --- profile citus -------------------------------------------------------------------------------


def test_the_citus_services_run_only_under_their_profile() -> None:
    for name in CITUS_SERVICES:
        assert service(name)["profiles"] == [CITUS_PROFILE], name
    for profiles in PROFILE_SETS:
        started = model(profiles) & set(CITUS_SERVICES)
        assert started == (set(CITUS_SERVICES) if CITUS_PROFILE in profiles else set()), sorted(profiles)
    assert model({CITUS_PROFILE}) == model(set()) | set(CITUS_SERVICES)


def test_the_citus_services_use_the_pinned_official_image() -> None:
    assert CITUS_IMAGE_PATTERN.fullmatch(CITUS_IMAGE)
    for name in CITUS_SERVICES:
        assert service(name)["image"] == CITUS_IMAGE, name
        assert "build" not in service(name) and "entrypoint" not in service(name), f"{name}: the image as published"


@pytest.mark.parametrize(
    "image",
    [
        "citusdata/citus",
        "citusdata/citus:latest",
        "citusdata/citus:13",
        "citusdata/citus:13.2-pg16",
        "citusdata/citus:13.2.0",
        "citusdata/citus:13.2.0-pg17",
        "citusdata/citus:14.1.0-pg16",
        "someone/citus:13.2.0-pg16",
    ],
)
def test_the_image_check_refuses_a_floating_or_other_image(image: str) -> None:
    assert not CITUS_IMAGE_PATTERN.fullmatch(image)


@pytest.mark.parametrize("name", CITUS_NODES)
def test_each_citus_node_holds_the_ledgers_database(name: str) -> None:
    node, postgres = environment(name), environment("postgres")
    for variable in ("POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD"):
        assert node[variable] == postgres[variable], f"{name}: {variable} differs from the service postgres"
    raw = raw_environment(name)
    assert raw["PGPASSWORD"] == raw["POSTGRES_PASSWORD"], "the nodes connect to each other with their own password"
    assert service(name)["restart"] == "unless-stopped"


@pytest.mark.parametrize("name", CITUS_NODES)
def test_each_citus_node_runs_the_server_with_the_suites_settings(name: str) -> None:
    from scripts.citus import NODE_SETTINGS

    words = command_words(name)
    assert words[0] == "postgres", "the image's entrypoint initialises the database, then runs the server"
    options = words[1:]
    assert options[::2] == ["-c"] * (len(options) // 2) and len(options) % 2 == 0, f"{name}: -c name=value pairs"
    settings = dict(option.split("=", 1) for option in options[1::2])
    assert settings, f"{name}: no settings"
    for setting, value in settings.items():
        assert NODE_SETTINGS.get(setting) == value, f"{name}: {setting}={value}, scripts/citus.py says {setting}="


def test_each_citus_node_keeps_its_data_in_its_own_volume() -> None:
    volumes = []
    for name in CITUS_NODES:
        (mount,) = service(name)["volumes"]
        volume, _, target = mount.partition(":")
        assert target == DATA_DIRECTORY, f"{name}: {mount}"
        assert volume in compose()["volumes"], f"{name}: volume {volume} is not declared"
        volumes.append(volume)
    assert len(set(volumes)) == len(CITUS_NODES) and "pgdata" not in volumes


@pytest.mark.parametrize("name", CITUS_NODES)
def test_a_citus_node_is_healthy_once_its_init_scripts_ran(name: str) -> None:
    words, env = healthcheck_words(name), environment(name)
    assert words[0] == "pg_isready"
    # TCP: the image runs its init scripts (CREATE EXTENSION citus) on a server listening on the socket only.
    assert words[words.index("-h") + 1] == "127.0.0.1"
    assert words[words.index("-U") + 1] == env["POSTGRES_USER"]
    assert words[words.index("-d") + 1] == env["POSTGRES_DB"]


def psql_arguments(words: list[str]) -> tuple[dict[str, str], list[str], list[str]]:
    """psql's --set=NAME=VALUE variables, its other options, and its positional arguments."""
    assert words[0] == "psql"
    variables: dict[str, str] = {}
    options: list[str] = []
    positional: list[str] = []
    for word in words[1:]:
        if word.startswith("--set="):
            name, _, value = word.removeprefix("--set=").partition("=")
            variables[name] = value
        elif word.startswith("-"):
            assert word.startswith("--"), f"write psql's options long and joined ({word})"
            options.append(word)
        else:
            positional.append(word)
    return variables, options, positional


def psql_variables_read(sql: str) -> set[str]:
    """The psql variables a script interpolates (:name, :'name'), comments left out; `::type` is a cast.

    String literals are not parsed: a colon before a word inside one would count (join.sql has none)."""
    code = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return {match.group(1) or match.group(2) for match in re.finditer(r"(?<!:):(?:'(\w+)'|([a-z_]\w*))", code)}


def test_the_psql_variable_reader_sees_variables_not_casts() -> None:
    assert psql_variables_read("SELECT :'a', :b, x::integer, ':', 1\n-- :d") == {"a", "b"}


def test_citus_init_joins_the_nodes_with_join_sql() -> None:
    assert service(CITUS_INIT)["restart"] == "no", "a one-shot that migrate waits for"
    variables, options, positional = psql_arguments(command_words(CITUS_INIT))
    (file_option,) = [option for option in options if option.startswith("--file=")]
    container_path = file_option.removeprefix("--file=")
    (mount,) = service(CITUS_INIT)["volumes"]
    source, target, mode = mount.split(":")
    assert target == container_path and mode == "ro"
    script = (ROOT / source).resolve()
    assert script == ROOT / "deploy" / "citus" / "join.sql" and script.is_file()
    assert set(variables) == psql_variables_read(script.read_text(encoding="utf-8")) == {"coordinator", "workers"}
    assert variables["coordinator"] == f"{CITUS_COORDINATOR}:{POSTGRES_PORT}"
    assert variables["workers"] == ",".join(f"{worker}:{POSTGRES_PORT}" for worker in CITUS_WORKERS)
    assert "--no-psqlrc" in options
    (url,) = positional
    parts, node = urlsplit(url), environment(CITUS_COORDINATOR)
    assert (parts.hostname, parts.port, parts.password) == (CITUS_COORDINATOR, POSTGRES_PORT, None)
    assert (parts.username, parts.path) == (node["POSTGRES_USER"], "/" + node["POSTGRES_DB"])
    assert environment(CITUS_INIT)["PGPASSWORD"] == node["POSTGRES_PASSWORD"]
    assert dependencies(CITUS_INIT) == dict.fromkeys(CITUS_NODES, "service_healthy")


def test_migrate_waits_for_the_cluster_only_under_the_profile() -> None:
    assert service("migrate")["depends_on"][CITUS_INIT] == {
        "condition": "service_completed_successfully",
        "required": False,
    }
    assert model_dependencies("migrate", {CITUS_PROFILE}) == {
        "postgres": "service_healthy",
        CITUS_INIT: "service_completed_successfully",
    }


def test_with_the_coordinator_named_the_ledger_reaches_it_as_the_nodes_user() -> None:
    variables = {**env_example(), "LEDGER_DATABASE_HOST": CITUS_COORDINATOR}
    node = environment(CITUS_COORDINATOR, variables)
    for name in ("migrate", "ledger"):
        env = environment(name, variables)
        url = urlsplit(env["DATABASE_URL"])
        assert (url.hostname, url.port) == (CITUS_COORDINATOR, POSTGRES_PORT)
        assert (url.username, url.password) == (node["POSTGRES_USER"], node["POSTGRES_PASSWORD"])
        assert url.path == "/" + node["POSTGRES_DB"]
        build_settings(name, env)


# --- secrets and .env.example --------------------------------------------------------------------


def literal_secrets(env: Mapping[str, str]) -> list[str]:
    """Variables of a raw (uninterpolated) environment that carry a secret not drawn from ${VAR}."""
    found = []
    for variable, raw in env.items():
        if variable == "LEDGER_CALLERS":
            tokens = re.findall(r'"token"\s*:\s*"([^"]*)"', raw)
            if not tokens or not all(_only_reference(token) for token in tokens):
                found.append(variable)
        elif variable.endswith("_URL") and "@" in raw:
            password = urlsplit(INTERPOLATION.sub("REF", raw)).password
            if password is not None and password != "REF":
                found.append(variable)
        elif SECRET_NAME.search(variable) and not _only_reference(raw):
            found.append(variable)
    return found


def _only_reference(raw: str) -> bool:
    """Exactly one ${VAR...} and nothing else, with no default value that could be a secret."""
    match = INTERPOLATION.fullmatch(raw.strip())
    if match is None or match.group("name") is None:
        return False
    return not (match.group("op") or "").endswith("-") or not match.group("arg")


def test_no_literal_secrets_in_compose() -> None:
    for name in compose()["services"]:
        assert not literal_secrets(raw_environment(name)), f"{name}: a secret written in docker-compose.yml"
    text = COMPOSE_PATH.read_text(encoding="utf-8")
    assert not SECRET_VALUE.search(text), "docker-compose.yml contains something that looks like a real key"


def test_the_secret_check_refuses_literals() -> None:
    assert literal_secrets({"STRIPE_API_KEY": "sk_test_abc"}) == ["STRIPE_API_KEY"]
    assert literal_secrets({"JWT_SECRET": "${JWT_SECRET:-a-default-secret}"}) == ["JWT_SECRET"]
    assert literal_secrets({"DATABASE_URL": "postgresql://u:hunter2@db/x"}) == ["DATABASE_URL"]
    assert literal_secrets({"LEDGER_CALLERS": '{"a": {"token": "abcdefabcdefabcdef", "roles": ["admin"]}}'})
    assert not literal_secrets({"LEDGER_TOKEN": "${T:?set T}", "JWT_SECRET": "${JWT_SECRET:-}"})


def test_env_example_lists_exactly_the_variables_compose_references() -> None:
    referenced = {name for text in strings(compose()) for name, _, _ in references(text)}
    listed = set(env_example())
    assert referenced - listed == set(), "referenced in docker-compose.yml, missing from .env.example"
    assert listed - referenced == set(), "listed in .env.example, used nowhere in docker-compose.yml"
    required = {name for text in strings(compose()) for name, op, _ in references(text) if op.endswith("?")}
    assert all(env_example()[name] for name in required), "every required variable has a placeholder"


def test_env_example_placeholders_are_not_real_secrets() -> None:
    for name, value in env_example().items():
        if SECRET_NAME.search(name) and value:
            assert "replace" in value, f".env.example: {name} must be an obvious placeholder"


# --- the Dockerfile ------------------------------------------------------------------------------


@functools.cache
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE_PATH.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def dockerfile_instructions(keyword: str) -> list[str]:
    return [arguments for name, arguments in dockerfile() if name == keyword]


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE_PATH.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str) -> bool:
    """Whether the build context leaves `path` out (.dockerignore: later patterns win, ! re-includes)."""
    result = False
    for pattern in dockerignore_patterns():
        negated = pattern.startswith("!")
        bare = pattern.removeprefix("!").removeprefix("**/")
        if fnmatch(path, bare) or fnmatch(path.rsplit("/", 1)[-1], bare) or path.startswith(bare + "/"):
            result = not negated
    return result


def test_dockerfile_copies_sources_that_exist_and_reach_the_build() -> None:
    copied: set[str] = set()
    for arguments in dockerfile_instructions("COPY"):
        *sources, _ = arguments.split()
        for source in sources:
            assert not source.startswith("--"), "COPY --from / --chown: update this test"
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
            assert not ignored(source), f"COPY {source}: excluded by .dockerignore"
            copied.add(source)
    assert {"pyproject.toml", "README.md", "credits", "services", "migrations", "alembic.ini"} <= copied


def test_dockerfile_runs_an_existing_module_as_an_unprivileged_user() -> None:
    (cmd,) = dockerfile_instructions("CMD")
    words = json.loads(cmd)
    assert words[:2] == ["python", "-m"] and module_path(words[2]) is not None
    assert (ROOT.joinpath(*words[2].split(".")) / "__main__.py").is_file()
    users = dockerfile_instructions("USER")
    assert users and users[-1] not in ("root", "0"), "the image runs as an unprivileged user"
    assert dockerfile_instructions("WORKDIR") == ["/app"], "alembic.ini is read from the working directory"


def test_dockerfile_bakes_in_no_secret() -> None:
    for arguments in dockerfile_instructions("ENV") + dockerfile_instructions("ARG"):
        names = re.findall(r"([A-Z][A-Z0-9_]*)=", arguments) or [arguments.split("=")[0]]
        assert not any(SECRET_NAME.search(name) for name in names), f"a secret in the image: {arguments}"
    assert not SECRET_VALUE.search(DOCKERFILE_PATH.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", [".env", ".env.production", ".venv", "var", ".git", "tests", "services/__pycache__"])
def test_dockerignore_keeps_secrets_and_local_state_out(path: str) -> None:
    assert ignored(path)


@pytest.mark.parametrize("path", ["services", "credits", "migrations", "alembic.ini", "pyproject.toml"])
def test_dockerignore_keeps_the_code_in(path: str) -> None:
    assert not ignored(path)
