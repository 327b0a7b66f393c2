"""Fixtures shared by the unit tests (tests/conftest.py has the databases, ``bastion`` and ``client``).

- ``bastion_with``: services and a client with other settings, on the test's data dir and database.
- ``world`` and ``w``: the prepared world of a module (see world.py). A module using them sets
  ``WORLD = Recipe(build, label)`` and overrides ``backend`` with module scope::

      @pytest.fixture(scope="module", params=BACKENDS)
      def backend(request: pytest.FixtureRequest) -> str:
          return require_backend(request.param)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from bastion.app import create_app
from bastion.services import Bastion
from bastion.settings import load_settings
from tests.conftest import settle_tuf
from tests.unit.world import Recipe, World, open_world


@pytest.fixture
def bastion_with(data_dir: Path, database_url: str) -> Iterator[Callable[..., tuple[Bastion, TestClient]]]:
    """Build a Bastion (and client) with other settings, on the test's database: bastion_with(**settings)."""
    made: list[tuple[Bastion, TestClient]] = []

    def build(**overrides: object) -> tuple[Bastion, TestClient]:
        instance = Bastion(load_settings(data_dir, database_url=database_url, **overrides), run_migrations=False)
        client = TestClient(create_app(bastion=instance), base_url="http://testserver")
        client.__enter__()
        settle_tuf(instance)
        made.append((instance, client))
        return instance, client

    yield build
    for instance, client in made:
        client.__exit__(None, None, None)
        instance.close()


@pytest.fixture(scope="module")
def world(backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[World]:
    """The world the module's ``WORLD`` recipe builds, one per module and backend."""
    recipe: Recipe = request.module.WORLD
    yield from open_world(backend, tmp_path_factory, recipe)


@pytest.fixture
def w(world: World) -> World:
    """The module's world, as it was right after it was built."""
    world.reset()
    return world
