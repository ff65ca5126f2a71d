"""services/docker_smoke.remove_run against a small fake of the Docker SDK client: a container created by an
ending run's worker thread after the first sweep keeps the network busy, and is swept on the next pass."""

from __future__ import annotations

from airflow_image_factory.services.docker_smoke import RUN_LABEL, remove_run

RUN = "abc123"


class _Thing:
    def __init__(self, kind: str, name: str, engine: FakeEngine):
        self.kind, self.name, self.engine = kind, name, engine

    def remove(self, **_):
        self.engine.remove(self)


class _Collection:
    def __init__(self, engine: FakeEngine, kind: str):
        self.engine, self.kind = engine, kind

    def list(self, all: bool = False, filters: dict | None = None):  # the SDK names it "all"
        assert filters == {"label": f"{RUN_LABEL}={RUN}"}
        return [thing for thing in self.engine.things if thing.kind == self.kind]


class FakeEngine:
    """Containers, volumes and networks of one run; removing the network fails while a container is left
    (the engine's "has active endpoints"). ``late`` containers appear when the first container goes."""

    def __init__(self, late: int = 0):
        self.things = [_Thing("container", "pod-a", self), _Thing("volume", "data", self),
                       _Thing("network", f"smoke-{RUN}", self)]
        self.late = late
        self.containers, self.volumes, self.networks = (_Collection(self, k) for k in
                                                        ("container", "volume", "network"))

    def remove(self, thing: _Thing) -> None:
        if thing.kind == "network" and any(t.kind == "container" for t in self.things):
            raise RuntimeError(f"error while removing network: network {thing.name} has active endpoints")
        self.things.remove(thing)
        if thing.kind == "container" and self.late:
            self.late -= 1
            self.things.append(_Thing("container", f"restarted-{self.late}", self))


def test_a_container_created_during_the_sweep_is_removed_and_then_the_network():
    engine = FakeEngine(late=1)
    removed = remove_run(engine, RUN, pause=0)
    assert engine.things == []
    assert removed[-1] == f"network smoke-{RUN}"
    assert "restarted-0" in removed


def test_a_quiet_run_is_removed_in_one_pass():
    engine = FakeEngine()
    assert remove_run(engine, RUN, pause=0) == ["pod-a", "volume data", f"network smoke-{RUN}"]
    assert engine.things == []


def test_the_sweep_gives_up_after_its_attempts_and_says_what_it_removed():
    engine = FakeEngine(late=10)  # a container keeps coming back
    removed = remove_run(engine, RUN, attempts=3, pause=0)
    assert [t.name for t in engine.things if t.kind == "network"] == [f"smoke-{RUN}"]
    assert len([name for name in removed if not name.startswith(("volume", "network"))]) == 3
