"""``manage.py generate_massachusetts``: ``generate_buildings --states MA``, without ``--states``.

Kept as the Makefile's and the README's command; see
:mod:`project.buildings.management.commands.generate_buildings` for everything it does.
"""

from __future__ import annotations

from project.buildings.management.commands import generate_buildings


class Command(generate_buildings.Command):
    help = (
        "Generate a deterministic synthetic Massachusetts: 494 ZIP code areas (Voronoi cells "
        "of the real ZIP centroids) and N building footprints, loaded in one transaction "
        "(generate_buildings --states MA)."
    )
    command_name = "generate_massachusetts"
    takes_states = False
