"""Which versions of the stacks we sit on were tested, and which combinations are known to be broken.

Two tables, one fact each:

- :data:`TESTED`: per distribution, the lowest and highest version the test suite ran against (the two locked
  environments, ``requirements/lowest.txt`` and ``constraints.txt``). A version outside that range may well work; it
  earns one warning line, never an error.
- :data:`KNOWN_BROKEN`: combinations measured to fail, each with the one command that repairs it. The lmms-eval
  entry point (:mod:`pfmvg_plugin.lmms.hook`) checks them at import and stops the ``lmms-eval`` command with that one
  line instead of a traceback minutes later.

``tests/test_environment.py`` fails when an installed version leaves :data:`TESTED`, so raising a pin means
re-running the suite and widening the range here in the same change. Standard library only: importable without torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version


@dataclass(frozen=True)
class Tested:
    """``low <= version <= high`` of ``dist`` ran the test suite (``high`` compared on as many parts as it has)."""

    dist: str
    low: str
    high: str


@dataclass(frozen=True)
class Broken:
    """``dist`` at ``low <= version`` (``< high`` when given) fails beside ``other`` at ``other_low..other_high``."""

    dist: str
    low: str
    high: str | None
    other: str
    other_low: str
    other_high: str
    why: str
    fix: str


#: What the model classes, the task hook and the trainer were checked against (both environments of `make test`).
TESTED: tuple[Tested, ...] = (
    Tested("lmms-eval", "0.7.3", "0.7.3"),
    Tested("transformers", "4.56.0", "5.23.0"),
    Tested("peft", "0.13.0", "0.21.2"),
    Tested("deepspeed", "0.15.0", "0.19.8"),
    Tested("accelerate", "1.0.0", "1.15.0"),
    Tested("datasets", "3.0.0", "5.2.0"),
)

#: Combinations measured to fail. Remove an entry once no supported release of ``other`` has the problem.
KNOWN_BROKEN: tuple[Broken, ...] = (
    Broken(
        dist="filelock", low="4.3", high=None, other="lmms-eval", other_low="0.7.3", other_high="0.7.3",
        why="its evaluator imports filelock._api, which filelock 4.3 removed: every evaluation fails",
        fix="pip install 'filelock<4.3'",
    ),
)


def parse_version(text: str) -> tuple[int, ...]:
    """The numeric release part of a version string (``"5.23.0.dev0"`` -> ``(5, 23, 0)``); ``()`` if there is none."""
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", text)
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def _at_most(found: tuple[int, ...], high: str) -> bool:
    """``found <= high`` where ``high`` covers every release it prefixes (``"0.7"`` admits ``0.7.9``)."""
    bound = parse_version(high)
    return found[: len(bound)] <= bound


def installed(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or None."""
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def broken_combinations(versions: dict[str, str | None] | None = None) -> list[str]:
    """One line per known-broken combination present (``versions``: dist -> version, default: what is installed)."""
    def get(dist: str) -> str | None:
        return versions.get(dist) if versions is not None else installed(dist)

    problems = []
    for rule in KNOWN_BROKEN:
        mine, other = get(rule.dist), get(rule.other)
        if mine is None or other is None:
            continue
        mine_v, other_v = parse_version(mine), parse_version(other)
        if mine_v < parse_version(rule.low) or (rule.high is not None and mine_v >= parse_version(rule.high)):
            continue
        if other_v < parse_version(rule.other_low) or not _at_most(other_v, rule.other_high):
            continue
        problems.append(f"{rule.other} {other} does not work with {rule.dist} {mine} ({rule.why}); "
                        f"run: {rule.fix}")
    return problems


def untested_versions(dists: tuple[str, ...] | None = None,
                      versions: dict[str, str | None] | None = None) -> list[str]:
    """One line per installed distribution of :data:`TESTED` outside its tested range (``dists``: which to check)."""
    lines = []
    for rule in TESTED:
        if dists is not None and rule.dist not in dists:
            continue
        found = versions.get(rule.dist) if versions is not None else installed(rule.dist)
        if found is None:
            continue
        parsed = parse_version(found)
        if parsed < parse_version(rule.low):
            lines.append(f"{rule.dist} {found} is older than the oldest version tested ({rule.low}); "
                         f"if something fails, run: pip install '{rule.dist}>={rule.low}'")
        elif not _at_most(parsed, rule.high):
            lines.append(f"{rule.dist} {found} is newer than the newest version tested ({rule.high}); "
                         "it may work: report what breaks")
    return lines
